"""The dashboard's figures over time on both databases: the history timer keeps one value
per figure and UTC day (the day's last), a day it did not run reads as null, today reads
live, each tenant sees only its own, and samples past `KEEP` are dropped."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from dockyard.cloud import scheduler
from dockyard.cloud.domain import history
from dockyard.cloud.domain.clock import ManualClock
from dockyard.cloud.domain.errors import Invalid
from dockyard.cloud.domain.modules import TimerEnv
from dockyard.cloud.settings import Settings
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import Agent, FigureSample

from ..factories import enrol_agent, make_world, system

DAY1 = datetime(2026, 3, 7, 23, 50, tzinfo=UTC)


def _seen(db: Database, tenant_id: uuid.UUID, agent_id: uuid.UUID, at: datetime) -> None:
    with system(db, tenant_id) as ctx:
        ctx.session.execute(update(Agent).where(Agent.id == agent_id).values(last_seen_at=at))


def _series(db: Database, tenant_id: uuid.UUID, clock: ManualClock, days: int) -> dict:
    with system(db, tenant_id, clock=clock) as ctx:
        found = history.history(ctx, tenant_id, days)
    assert len(found.days) == days
    assert all(len(s.values) == days for s in found.series)
    return {"days": [d.isoformat() for d in found.days]} | {s.name: s.values for s in found.series}


def test_the_timer_keeps_each_day_s_last_sample_and_today_reads_live(
    db: Database, tmp_path: Path
) -> None:
    world, other = make_world(db), make_world(db)
    agent_id = enrol_agent(world, tmp_path)
    enrol_agent(other, tmp_path)
    clock = ManualClock(DAY1)
    env = TimerEnv(db, clock, Settings(database_url=db.url, data_dir=tmp_path))
    timer = scheduler.timer("dashboard.history")

    _seen(db, world.tenant_id, agent_id, DAY1)  # online on the 7th
    assert timer.run(env)["sampled"] >= 2  # every live tenant, the other one too
    clock.advance(timedelta(minutes=20))  # the 8th, 00:10: silent for 20 minutes, quiet
    timer.run(env)
    clock.advance(timedelta(hours=1))
    _seen(db, world.tenant_id, agent_id, clock.now())  # online again: the 8th's last sample
    timer.run(env)
    clock.advance(timedelta(days=2))  # the 9th has no sample; on the 10th it is quiet again

    got = _series(db, world.tenant_id, clock, 4)
    assert got["days"] == ["2026-03-07", "2026-03-08", "2026-03-09", "2026-03-10"]
    assert got["agents.online"] == [1.0, 1.0, None, 0.0]
    assert got["agents.quiet"] == [0.0, 0.0, None, 1.0]
    assert got["jobs.pending"] == [0.0, 0.0, None, 0.0]
    # The VM module's part is sampled beside the core's, every life state and its storage.
    assert got["vms.archived"] == [0.0, 0.0, None, 0.0]
    assert got["vms.stored_bytes"][0] == 0.0
    names = [n for n in got if n != "days"]
    assert names.index("agents.online") < names.index("jobs.pending") < names.index("vms.running")

    with system(db, world.tenant_id, other.tenant_id) as ctx:
        rows = ctx.session.execute(
            select(FigureSample.tenant_id, FigureSample.day, func.count())
            .group_by(FigureSample.tenant_id, FigureSample.day)
            .order_by(FigureSample.day)
        ).all()
    # One row per figure and day, whatever the number of runs that day.
    mine = [(str(day), n) for t, day, n in rows if t == world.tenant_id]
    assert [d for d, _ in mine] == ["2026-03-07", "2026-03-08"]
    assert mine[0][1] == mine[1][1] == len(names)
    # The other tenant's samples are its own: it never saw this agent.
    theirs = _series(db, other.tenant_id, clock, 4)
    assert theirs["agents.online"] == [0.0, 0.0, None, 0.0]
    assert theirs["agents.quiet"] == [1.0, 1.0, None, 1.0]

    with system(db, world.tenant_id, clock=clock) as ctx:
        for bad in (0, 91):
            with pytest.raises(Invalid, match="days is between 1 and 90"):
                history.history(ctx, world.tenant_id, bad)


def test_samples_older_than_the_keep_are_dropped(db: Database, tmp_path: Path) -> None:
    world = make_world(db)
    clock = ManualClock(DAY1)
    env = TimerEnv(db, clock, Settings(database_url=db.url, data_dir=tmp_path))

    def days() -> list[str]:
        with system(db, world.tenant_id) as ctx:
            found = ctx.session.scalars(
                select(FigureSample.day).distinct().order_by(FigureSample.day)
            )
            return [str(d) for d in found]

    first = DAY1.date()
    history.run(env)
    clock.advance(history.KEEP)
    history.run(env)  # exactly KEEP later: the first day stays
    assert days() == [str(first), str(first + history.KEEP)]
    clock.advance(timedelta(days=1))
    history.run(env)
    assert days() == [str(first + history.KEEP), str(first + history.KEEP + timedelta(days=1))]
