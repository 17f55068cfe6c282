"""The runner against a real cloud, in this process: it measures its clock's skew from the
cloud's `Dockyard-Time` and judges a command's deadline by the cloud's time-to-live on its
own monotonic clock, with its clock three days ahead of the cloud's or three days behind."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dockyard.agent.clock import SKEW_FILE
from dockyard.agent.errors import LinkRefused
from dockyard.agent.protocol import PollResponse
from dockyard.agent.runner import Runner
from dockyard.agent.state import State
from dockyard.cloud.domain import commands
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import Agent as AgentRow
from dockyard.cloud.store.models import Command

from ..factories import World, enrolment_secret, make_world, system
from ..procs import Agent, Cloud, eventually

DAY = timedelta(days=1)
SKEWS = {"agent-3-days-ahead": 3 * DAY, "agent-3-days-behind": -3 * DAY}


@pytest.fixture
def docked(cloud: Cloud, pg: Database, tmp_path: Path) -> tuple[Agent, uuid.UUID, World]:
    world = make_world(pg)
    agent = Agent(tmp_path / "agent")
    agent.dock(cloud.url, enrolment_secret(world))
    agent_id = uuid.UUID(json.loads(agent.cli("status", "--json").stdout)["links"][0]["agent_id"])
    return agent, agent_id, world


def open_runner(agent: Agent, clock_file: Path, skew: timedelta, mp: pytest.MonkeyPatch) -> Runner:
    """The agent's clock is a file the test writes: the real time plus `skew`."""
    clock_file.write_text((datetime.now(UTC) + skew).isoformat())
    mp.setenv("DOCKYARD_CLOCK", f"file:{clock_file}")
    return Runner(State(agent.state), wait_s=0)


@pytest.mark.parametrize("skew", SKEWS.values(), ids=SKEWS.keys())
def test_skew_is_measured_and_a_deadline_follows_the_clouds_ttl(
    docked: tuple[Agent, uuid.UUID, World],
    pg: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    skew: timedelta,
) -> None:
    agent, agent_id, world = docked
    runner = open_runner(agent, tmp_path / "clock", skew, monkeypatch)
    try:
        runner.poll_once(wait=0)
        assert runner.skew is not None
        assert abs(runner.skew.seconds - skew.total_seconds()) < 120
        saved = json.loads((agent.state / SKEW_FILE).read_text())
        assert saved["skew_s"] == runner.skew.seconds
        estimate = runner.modules["vm"].ctx.cloud_time()
        assert estimate is not None
        assert abs(estimate - datetime.now(UTC)) < timedelta(minutes=2)

        # Ten minutes to live: by the agent's wall clock it lapsed three days ago (or has
        # three days left); by the cloud's TTL it is due now, and runs.
        with system(pg, world.tenant_id) as ctx:
            command_id = commands.issue(
                ctx, agent_id, "noop.append", {"text": "on time"}, ttl=timedelta(minutes=10)
            ).id
        runner.poll_once(wait=0)
        entry = runner.journal.get(str(command_id))
        assert entry is not None
        assert (entry.state, entry.result_code) == ("done", "ok")
        with system(pg, world.tenant_id) as ctx:
            row = ctx.session.get(Command, command_id)
            assert row is not None
            assert row.state == "succeeded"

        # The skew went up with the polls; the cloud's sweeper stores it for people to see.
        def reported() -> int | None:
            with system(pg, world.tenant_id) as ctx:
                agent_row = ctx.session.get(AgentRow, agent_id)
                assert agent_row is not None
                return agent_row.clock_skew_s

        eventually(lambda: reported() is not None, timeout=30, what="the skew in the cloud")
        assert reported() == round(runner.skew.seconds)
        assert runner.link is not None
        with pytest.raises(LinkRefused, match="whole number of seconds"):
            runner.link._authed(
                "GET", "/poll", PollResponse, params={"after": 0, "wait": 0, "skew": "soon"}
            )
    finally:
        runner.state.close()


@pytest.mark.parametrize("skew", SKEWS.values(), ids=SKEWS.keys())
def test_a_command_past_the_clouds_ttl_lapses_whatever_the_agents_wall_clock_says(
    docked: tuple[Agent, uuid.UUID, World],
    pg: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    skew: timedelta,
) -> None:
    """Ten minutes to live, and eleven pass (on the monotonic clock) between the answer and
    the run: it lapses, though an agent three days behind would see three days left on its
    wall clock."""
    agent, agent_id, world = docked
    runner = open_runner(agent, tmp_path / "clock", skew, monkeypatch)
    judged = Runner._deadline

    def eleven_minutes_later(command: Any, stamped: Any) -> float | None:
        deadline = judged(command, stamped)
        return None if deadline is None else deadline - 11 * 60

    monkeypatch.setattr(Runner, "_deadline", staticmethod(eleven_minutes_later))
    try:
        runner.poll_once(wait=0)  # the skew first
        with system(pg, world.tenant_id) as ctx:
            command_id = commands.issue(
                ctx, agent_id, "noop.append", {"text": "too late"}, ttl=timedelta(minutes=10)
            ).id
        runner.poll_once(wait=0)
        entry = runner.journal.get(str(command_id))
        assert entry is not None
        assert (entry.state, entry.result_code) == ("rejected", "expired")

        def cloud_state() -> tuple[str, str | None]:
            with system(pg, world.tenant_id) as ctx:
                row = ctx.session.get(Command, command_id)
                assert row is not None
                return row.state, row.result_code

        eventually(lambda: cloud_state() == ("failed", "expired"), timeout=30, what="expired")
    finally:
        runner.state.close()
