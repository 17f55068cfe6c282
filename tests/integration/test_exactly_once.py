"""At-least-once delivery, exactly-once effect: kill -9 the agent between effect, journal
write and ack, restart it, and the command's line is in the file once."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from dockyard.agent.crashpoints import POINTS
from dockyard.cloud.domain import commands
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import Command

from ..factories import enrolment_secret, make_world, system
from ..procs import Agent, Cloud, eventually


@pytest.mark.parametrize("point", POINTS)
def test_kill_9_at_each_point_leaves_exactly_one_effect(
    cloud: Cloud, pg: Database, tmp_path: Path, point: str
) -> None:
    world = make_world(pg)
    agent = Agent(tmp_path / "agent")
    agent.dock(cloud.url, enrolment_secret(world))
    agent_id = uuid.UUID(json.loads(agent.cli("status", "--json").stdout)["links"][0]["agent_id"])
    with system(pg, world.tenant_id) as ctx:
        command_id = commands.issue(ctx, agent_id, "noop.append", {"text": point}).id

    agent.start(env={"DOCKYARD_CRASH_AT": point})
    assert agent.wait_exit(timeout=30) == -9, agent.log.read_text()[-2000:]
    agent.start()
    try:

        def state() -> str | None:
            with system(pg, world.tenant_id) as ctx:
                row = ctx.session.get(Command, command_id)
                assert row is not None
                return row.state if row.state in ("succeeded", "failed") else None

        assert eventually(state, what="the command to finish") == "succeeded"
        lines = (agent.state / "modules" / "noop" / "lines.log").read_text().splitlines()
        assert lines == [f"{command_id} {point}"]
    finally:
        agent.stop()
