"""What the portal's live view is told, on both databases: an agent enrolled, revoked or
just gone quiet is announced after its commit with only its kind, tenant and id, to that
tenant's listeners only; the bookkeeping of every ack and a rolled-back change are not."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from dockyard.cloud import scheduler
from dockyard.cloud.bus import Bus
from dockyard.cloud.domain import agents
from dockyard.cloud.domain.clock import ManualClock
from dockyard.cloud.domain.dashboard import QUIET_AFTER
from dockyard.cloud.domain.live import Change, Kind
from dockyard.cloud.domain.modules import TimerEnv
from dockyard.cloud.settings import Settings
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import Agent

from ..factories import enrol_agent, make_world, system


def test_enrolment_and_revocation_are_announced_and_bookkeeping_is_not(
    db_url: str, tmp_path: Path
) -> None:
    db = Database(db_url)
    bus = Bus()
    bus.attach(db)
    world = make_world(db)

    def revoke_and_roll_back(agent_id: uuid.UUID) -> None:
        with system(db, world.tenant_id) as ctx:
            agents.revoke(ctx, agent_id)
            raise RuntimeError("rolled back: never announced")

    def bookkeeping_then_another(agent_id: uuid.UUID) -> uuid.UUID:
        with system(db, world.tenant_id) as ctx:  # what an ack writes, through the ORM
            ctx.session.get(Agent, agent_id).acked_seq = 1  # type: ignore[union-attr]
        with system(db, world.tenant_id) as ctx:  # and a sequence number, through Core
            ctx.session.execute(
                update(Agent).where(Agent.id == agent_id).values(last_seq=Agent.last_seq + 1)
            )
        with pytest.raises(RuntimeError, match="rolled back"):
            revoke_and_roll_back(agent_id)
        return enrol_agent(world, tmp_path)

    async def scenario() -> None:
        await bus.start()
        with bus.live({world.tenant_id}) as listener, bus.live({uuid.uuid4()}) as stranger:
            agent_id = await asyncio.to_thread(enrol_agent, world, tmp_path)
            mine = Change(Kind.AGENT, world.tenant_id, agent_id)
            assert await listener.next(30) == ({mine}, False)
            other = await asyncio.to_thread(bookkeeping_then_another, agent_id)
            # Had the ack, the sequence or the rolled-back revocation been announced, the
            # first agent would be here too: each was committed before the second enrolled.
            assert await listener.next(30) == ({Change(Kind.AGENT, world.tenant_id, other)}, False)
            await asyncio.to_thread(lambda: _revoke(db, world.tenant_id, agent_id))
            assert await listener.next(30) == ({mine}, False)
            assert await stranger.next(0) == (set(), False), "another tenant's hears nothing"
        await bus.stop()

    try:
        asyncio.run(scenario())
    finally:
        db.dispose()


def _revoke(db: Database, tenant_id: uuid.UUID, agent_id: uuid.UUID) -> None:
    with system(db, tenant_id) as ctx:
        agents.revoke(ctx, agent_id)


def test_a_change_crosses_the_bus_as_65_characters_and_nothing_else_decodes() -> None:
    change = Change(Kind.JOB, uuid.uuid4(), uuid.uuid4())
    assert len(change.encode()) == 65
    assert Change.decode(change.encode()) == change
    for junk in ("", "x" * 65, "j" + "0" * 63, change.encode() + "0"):
        with pytest.raises(ValueError, match="65 characters|valid Kind|hexadecimal"):
            Change.decode(junk)


def test_a_new_command_announces_its_job_at_the_commit_whichever_way_it_was_issued(
    db_url: str, tmp_path: Path
) -> None:
    """Issuing writes jobs by Core statements, which the flush never sees: each way of issuing
    names its jobs itself (a single issue, one with an idempotency key, a burst)."""
    from dockyard.cloud.domain import commands

    db = Database(db_url)
    bus = Bus()
    bus.attach(db)
    world = make_world(db)
    agent_id = enrol_agent(world, tmp_path)

    def issue(how: str) -> set[uuid.UUID]:
        with system(db, world.tenant_id) as ctx:
            if how == "one":
                made = [commands.issue(ctx, agent_id, "noop.append", {"text": how})]
            elif how == "keyed":
                made = [commands.issue(ctx, agent_id, "noop.append", {}, idempotency_key="k1")]
            else:
                made = commands.issue_many(ctx, [agent_id], "noop.append", {"text": how})
            return {c.job_id for c in made}

    async def scenario() -> None:
        await bus.start()
        with bus.live({world.tenant_id}) as listener:
            for how in ("one", "keyed", "many"):
                jobs = await asyncio.to_thread(issue, how)
                heard, _ = await listener.next(30)
                assert heard == {Change(Kind.JOB, world.tenant_id, j) for j in jobs}, how
        await bus.stop()

    try:
        asyncio.run(scenario())
    finally:
        db.dispose()


def test_an_agent_turning_quiet_is_announced_once_its_last_poll_passes_the_threshold(
    db_url: str, tmp_path: Path
) -> None:
    """No row changes when an agent falls silent, so the `agents.quiet` timer announces it:
    within the window after its last poll passed `QUIET_AFTER`, not before, not long after
    (it was announced then), and never a revoked one."""
    db = Database(db_url)
    bus = Bus()
    bus.attach(db)
    world = make_world(db)
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    env = TimerEnv(db, ManualClock(now), Settings(database_url=db_url, data_dir=tmp_path))
    window = timedelta(seconds=2 * env.settings.quiet_check_interval_s)
    ago = {
        "just quiet": QUIET_AFTER + timedelta(seconds=1),
        "still online": QUIET_AFTER - timedelta(seconds=1),
        "quiet long ago": QUIET_AFTER + window + timedelta(seconds=1),
        "just quiet, revoked": QUIET_AFTER + timedelta(seconds=1),
    }
    ids = {}
    for what, age in ago.items():
        ids[what] = enrol_agent(world, tmp_path)
        with system(db, world.tenant_id) as ctx:
            ctx.session.execute(
                update(Agent).where(Agent.id == ids[what]).values(last_seen_at=now - age)
            )
    _revoke(db, world.tenant_id, ids["just quiet, revoked"])

    async def scenario() -> None:
        await bus.start()
        with bus.live({world.tenant_id}) as listener:
            counts = await asyncio.to_thread(scheduler.timer("agents.quiet").run, env)
            assert counts == {"announced": 1}
            quiet = Change(Kind.AGENT, world.tenant_id, ids["just quiet"])
            assert await listener.next(30) == ({quiet}, False)
        await bus.stop()

    try:
        asyncio.run(scenario())
    finally:
        db.dispose()
