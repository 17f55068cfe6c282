"""The agent's own commands on real processes: rotate-key (also cut off half way), undock,
and running standalone with no cloud at all."""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path

import httpx

from dockyard.agent import keys
from dockyard.agent import protocol as p
from dockyard.agent.crashpoints import ROTATION_POINT
from dockyard.cloud.domain import commands
from dockyard.cloud.store.db import Database

from ..factories import World, enrolment_secret, make_world, system
from ..procs import Agent, Cloud, eventually


def _agent_id(agent: Agent) -> uuid.UUID:
    return uuid.UUID(json.loads(agent.cli("status", "--json").stdout)["links"][0]["agent_id"])


def _token_status(cloud: Cloud, agent_id: uuid.UUID, key_pem: bytes, tmp: Path) -> int:
    """Ask the cloud for an access token with a given key; the HTTP status."""
    path = tmp / f"probe-{uuid.uuid4().hex}.key"
    path.write_bytes(key_pem)
    path.chmod(0o600)
    token_url = f"{cloud.url}/agent/v1/token"
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": p.ASSERTION_TYPE,
        "client_assertion": keys.assertion(keys.load(path), str(agent_id), token_url),
    }
    headers = {p.VERSION_HEADER: p.PROTOCOL_VERSION}
    return httpx.post(token_url, data=form, headers=headers).status_code


def _docked(cloud: Cloud, pg: Database, tmp_path: Path) -> tuple[World, Agent, uuid.UUID, Path]:
    """A docked agent (not running): its world, itself, its id and its key file."""
    world = make_world(pg)
    agent = Agent(tmp_path / "agent")
    agent.dock(cloud.url, enrolment_secret(world))
    return world, agent, _agent_id(agent), next(agent.state.glob("*.key"))


def _runs_a_command(agent: Agent, pg: Database, tenant_id: uuid.UUID, text: str) -> None:
    """Start the agent, see a noop.append command take effect, stop it cleanly."""
    agent.start()
    try:
        with system(pg, tenant_id) as ctx:
            commands.issue(ctx, _agent_id(agent), "noop.append", {"text": text})
        lines = agent.state / "modules" / "noop" / "lines.log"
        eventually(lambda: lines.exists() and text in lines.read_text(), what=f"the line {text!r}")
    finally:
        assert agent.stop() == 0


def test_rotate_key_refuses_the_old_key_and_keeps_the_agent(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    world, agent, agent_id, key_file = _docked(cloud, pg, tmp_path)
    old_pem = key_file.read_bytes()
    assert _token_status(cloud, agent_id, old_pem, tmp_path) == 200

    out = agent.cli("rotate-key")
    assert "rotated" in out.stdout
    new_pem = key_file.read_bytes()
    assert new_pem != old_pem
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert _token_status(cloud, agent_id, old_pem, tmp_path) == 401
    assert _token_status(cloud, agent_id, new_pem, tmp_path) == 200
    assert _agent_id(agent) == agent_id, "the same agent, not a new enrolment"

    _runs_a_command(agent, pg, world.tenant_id, "after-rotation")


def test_a_rotation_cut_off_half_way_is_settled_by_the_next_run(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    world, agent, agent_id, key_file = _docked(cloud, pg, tmp_path)
    old_pem = key_file.read_bytes()

    out = agent.cli("rotate-key", env={"DOCKYARD_CRASH_AT": ROTATION_POINT}, check=False)
    assert out.returncode == -signal.SIGKILL
    pending = key_file.with_name(key_file.name + ".next")
    assert pending.exists()
    assert key_file.read_bytes() == old_pem, "the file still holds the key the cloud dropped"
    assert _token_status(cloud, agent_id, old_pem, tmp_path) == 401

    _runs_a_command(agent, pg, world.tenant_id, "after-cut-off-rotation")
    assert not pending.exists()
    assert _token_status(cloud, agent_id, key_file.read_bytes(), tmp_path) == 200


def test_undock_forgets_the_link_and_the_modules_go_on(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    world = make_world(pg)
    agent = Agent(tmp_path / "agent")
    agent.dock(cloud.url, enrolment_secret(world))
    _runs_a_command(agent, pg, world.tenant_id, "measures the cloud's clock")
    skew = json.loads(agent.cli("status", "--json").stdout)["clock_skew"]
    assert abs(skew["seconds"]) < 5, "one machine: the cloud's clock is this one"
    side = "ahead of" if skew["seconds"] >= 0 else "behind"
    assert f"{abs(skew['seconds']):.1f} s {side} the cloud's" in agent.cli("status").stdout

    assert "undocked" in agent.cli("undock").stdout
    after = json.loads(agent.cli("status", "--json").stdout)
    assert after["links"] == []
    assert after["clock_skew"] is None
    assert not (agent.state / "cloud-clock.json").exists(), "standalone: its own clock only"
    assert not list(agent.state.glob("*.key")), "the private key goes with the link"
    again = agent.cli("undock", check=False)
    assert again.returncode != 0
    assert "not docked" in again.stderr.lower()


def test_without_any_cloud_the_modules_run_standalone(tmp_path: Path) -> None:
    agent = Agent(tmp_path / "agent")
    agent.start()
    try:
        beat = agent.state / "modules" / "noop" / "heartbeat.json"
        eventually(beat.exists, what="a standalone tick of the noop module")
        assert json.loads(beat.read_text())["features"] == ["status"]
    finally:
        assert agent.stop() == 0


def test_dock_name_is_what_the_cloud_calls_the_agent(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    from sqlalchemy import select

    from dockyard.cloud.store.models import Agent as AgentRow

    world = make_world(pg)
    named = Agent(tmp_path / "named")
    named.dock(cloud.url, enrolment_secret(world), "--name", "  lab agent 1 ")
    plain = Agent(tmp_path / "plain")
    plain.dock(cloud.url, enrolment_secret(world))
    with system(pg, world.tenant_id) as ctx:
        names = {row.id: row.name for row in ctx.session.scalars(select(AgentRow))}
    assert names[_agent_id(named)] == "lab agent 1"
    assert names[_agent_id(plain)] not in ("", "lab agent 1")  # the host's name, as before


def test_a_bad_dock_name_is_one_line_and_writes_nothing(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    agent = Agent(tmp_path / "agent")
    result = agent.cli(
        "dock",
        cloud.url,
        "--name",
        "x" * 65,
        input=enrolment_secret(make_world(pg)) + "\n",
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "dockyard-agent: --name is at most 64 characters, with no control characters"
    )
    assert not agent.state.exists() or not any(agent.state.iterdir())
