"""The generated MSP client against the real cloud on PostgreSQL: the example in
docs/examples/ lists every child tenant's agents with a token of a member of the MSP alone
(no membership in any child) and issues a command to each; the commands land for exactly
those agents (not a revoked one, not an archived child's, not another MSP's), a real
agent runs its own to the end, a viewer's token issues nothing, and the script's whole run
loads nothing of the server stack."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from dockyard.agent.protocol import FlowMode
from dockyard.cloud.client import (
    Client,
    CommandCommandCommand,
    CommandState,
    GraphQLClientHttpError,
    IssueCommandIssueCommandCommand,
)
from dockyard.cloud.domain import admin, agents, commands, tenants
from dockyard.cloud.domain.clock import SystemClock
from dockyard.cloud.domain.pages import PageRequest
from dockyard.cloud.domain.principal import Role
from dockyard.cloud.store.db import Database

from ..factories import Gql, World, add_user, enrol_agent, enrolment_secret, make_world, system
from ..procs import Agent, Cloud, eventually

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "msp_command_children.py"
SERVER_STACK = ("starlette", "strawberry", "sqlalchemy", "alembic", "psycopg", "uvicorn")


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("msp_command_children", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


example = _example()


def _child(world: World, name: str) -> World:
    """Another customer of the world's MSP, with a site: the world seen from that child."""
    clock = SystemClock()
    with world.db.transaction() as session:
        child = admin.ensure_tenant(
            session,
            clock,
            name,
            kind="customer",
            flow_mode=FlowMode.METADATA,
            plan="enterprise",
            parent_id=world.msp_id,
        )
        child_id = child.id
    with system(world.db, child_id) as ctx:
        site_id = tenants.create_site(ctx, child_id, "main", None).id
    return replace(world, tenant_id=child_id, site_id=site_id)


def _commands_to(db: Database, world: World, agent_id: uuid.UUID | str) -> list[str]:
    """The names of the commands the agent (of `world`'s tenant) was ever given."""
    with system(db, world.tenant_id) as ctx:
        page = commands.listing(ctx, uuid.UUID(str(agent_id)), PageRequest(100))
        return [c.name for c in page.items]


@pytest.fixture
def estate(cloud: Cloud, pg: Database, tmp_path: Path) -> dict[str, Any]:
    """An MSP with two live children (three agents, one more revoked), an archived child
    with an agent, and another MSP whose child has an agent: the ids the tests need."""
    north = make_world(pg)
    south = _child(north, f"South {uuid.uuid4().hex[:6]}")
    gone = _child(north, f"Gone {uuid.uuid4().hex[:6]}")
    keys = tmp_path / "keys"
    keys.mkdir()
    live = {
        str(north.tenant_id): sorted(str(enrol_agent(north, keys)) for _ in range(2)),
        str(south.tenant_id): [str(enrol_agent(south, keys))],
    }
    revoked = enrol_agent(south, keys)
    with system(pg, south.tenant_id) as ctx:
        agents.revoke(ctx, revoked)
    archived_agent = enrol_agent(gone, keys)
    archived = Gql(cloud.url, north.token).data(
        "mutation($t: ID!) { archiveTenant(tenantId: $t) { __typename } }", t=str(gone.tenant_id)
    )
    assert archived == {"archiveTenant": {"__typename": "Tenant"}}
    other = make_world(pg)
    other_agent = enrol_agent(other, keys)
    return {
        "north": north,
        "south": south,
        "live": live,
        "untouched": [(south, revoked), (gone, archived_agent), (other, other_agent)],
    }


def test_an_msp_member_commands_every_child_agent_and_nothing_else(
    cloud: Cloud, pg: Database, estate: dict[str, Any]
) -> None:
    north: World = estate["north"]
    # An admin of the MSP alone (no seat in any child) makes a token as MSPs do: in the MSP.
    _, login = add_user(pg, north.msp_id, Role.ADMIN)
    made = Gql(cloud.url, login).data(
        """mutation($t: ID!) { createApiToken(tenantId: $t, name: "automation") {
        ... on NewApiToken { secret } } }""",
        t=str(north.msp_id),
    )
    token = made["createApiToken"]["secret"]
    with example.connect(cloud.url, token) as client:
        reports = example.command_children(
            client, "noop.echo", {"text": "from the MSP"}, msp_id=str(north.msp_id)
        )
        assert {r.tenant_id: sorted(r.agent_ids) for r in reports} == estate["live"]
        assert [r.refused for r in reports] == [None, None]
        for report in reports:
            assert len(report.command_ids) == len(report.agent_ids)
            landed = [client.command(id=c).command for c in report.command_ids]
            assert all(isinstance(c, CommandCommandCommand) for c in landed), landed
            assert {
                (c.agent_id, c.tenant_id, c.name, c.args["text"], c.job is not None)
                for c in landed
                if isinstance(c, CommandCommandCommand)
            } == {
                (a, report.tenant_id, "noop.echo", "from the MSP", True) for a in report.agent_ids
            }
    for world, agent_id in estate["untouched"]:
        assert _commands_to(pg, world, agent_id) == [], world.tenant_id
    # And each live agent was given this one command, once.
    for tenant_id, agent_ids in estate["live"].items():
        world = replace(north, tenant_id=uuid.UUID(tenant_id))
        assert [_commands_to(pg, world, a) for a in agent_ids] == [["noop.echo"]] * len(agent_ids)


def test_a_real_agent_in_a_child_runs_the_msps_command(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    north = make_world(pg)
    _, token = add_user(pg, north.msp_id, Role.OPERATOR)
    agent = Agent(tmp_path / "agent")
    agent.dock(cloud.url, enrolment_secret(north))
    agent.start()
    try:
        with example.connect(cloud.url, token) as client:
            (report,) = example.command_children(
                client, "noop.echo", {"x": 1}, msp_id=str(north.msp_id)
            )
            (command_id,) = report.command_ids

            def finished() -> CommandCommandCommand | None:
                answer = client.command(id=command_id).command
                assert isinstance(answer, CommandCommandCommand), answer
                return answer if answer.state is CommandState.SUCCEEDED else None

            done = eventually(finished, timeout=60, what="the agent to run the MSP's command")
            assert done.job is not None
            assert done.job.state.value == "SUCCEEDED"
    finally:
        agent.stop()


def test_a_viewer_of_the_msp_lists_but_each_child_refuses_the_command(
    cloud: Cloud,
    pg: Database,
    estate: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    north: World = estate["north"]
    _, token = add_user(pg, north.msp_id, Role.VIEWER)
    with example.connect(cloud.url, token) as client:
        # No --msp: the children of every MSP the token sees (this one alone).
        reports = example.command_children(client, "noop.echo")
    assert {r.tenant_id: sorted(r.agent_ids) for r in reports} == estate["live"]
    assert [r.command_ids for r in reports] == [[], []]
    assert all((r.refused or "").startswith("PermissionDenied: ") for r in reports), reports
    for tenant_id, agent_ids in estate["live"].items():
        world = replace(north, tenant_id=uuid.UUID(tenant_id))
        assert [_commands_to(pg, world, a) for a in agent_ids] == [[]] * len(agent_ids)
    # The script says so in its table, one row per child, and exits 1.
    monkeypatch.setenv("DOCKYARD_TOKEN", token)
    assert example.main(["noop.echo", "--url", cloud.url, "--msp", str(north.msp_id)]) == 1
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["TENANT", "AGENTS", "ISSUED", "NOTE"]
    assert len(rows) == 2
    assert all("PermissionDenied: command:issue needs" in row for row in rows), rows


def test_a_bad_token_and_a_bad_command_are_clear_answers(
    cloud: Cloud, pg: Database, estate: dict[str, Any]
) -> None:
    with example.connect(cloud.url, "dy_pat_not-a-token") as stranger:
        with pytest.raises(GraphQLClientHttpError) as refused:
            example.child_tenants(stranger)
        assert refused.value.status_code == 401
    north: World = estate["north"]
    _, token = add_user(pg, north.msp_id, Role.OPERATOR)
    client: Client
    with example.connect(cloud.url, token) as client:  # typed: the example loads by path
        (one, *_) = estate["live"][str(north.tenant_id)]
        bad = client.issue_command(
            agent_id=one, name="Not A Name", ttl_seconds=60, timeout_seconds=60
        ).issue_command
        assert not isinstance(bad, IssueCommandIssueCommandCommand)
        assert bad.typename__ == "InvalidInput"
        assert "module.action" in bad.message


def test_the_script_runs_end_to_end_without_the_server_stack(
    cloud: Cloud, pg: Database, estate: dict[str, Any]
) -> None:
    """The example as a user runs it, in a fresh interpreter: its output, its exit code,
    and the modules it loaded (none of the server's, nothing of dockyard.cloud but the
    client)."""
    north: World = estate["north"]
    _, token = add_user(pg, north.msp_id, Role.OPERATOR)
    probe = (
        "import runpy, sys, json\n"
        f"sys.argv = ['msp', 'noop.echo', '--json', '--msp', {str(north.msp_id)!r}]\n"
        "try:\n"
        f"    runpy.run_path({str(EXAMPLE)!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    code = e.code\n"
        "server = sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{SERVER_STACK!r} or (m.startswith('dockyard.cloud.') and not "
        "m.startswith('dockyard.cloud.client')))\n"
        "print(json.dumps(server), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"DOCKYARD_URL": cloud.url, "DOCKYARD_TOKEN": token},
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stderr.strip().splitlines()[-1]) == []
    reports = json.loads(run.stdout)
    assert {r["tenant_id"]: sorted(r["agent_ids"]) for r in reports} == estate["live"]
    assert all(len(r["command_ids"]) == len(r["agent_ids"]) for r in reports)

    refused = subprocess.run(
        [sys.executable, str(EXAMPLE), "noop.echo", "--args", "[1]"],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ | {"DOCKYARD_URL": cloud.url, "DOCKYARD_TOKEN": token},
    )
    assert (refused.returncode, refused.stderr.strip()) == (
        2,
        '--args must be a JSON object, e.g. \'{"text": "hi"}\'',
    )
