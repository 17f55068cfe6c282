"""The dashboard's series over time on both databases: finished jobs per UTC day, each day
of the window present, a job counted on the UTC day it finished whatever the database
session's time zone; and the audit log's filters (a literal prefix, outcome, actor)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text, update

from dockyard.cloud.domain import audit, commands, dashboard
from dockyard.cloud.domain.clock import ManualClock
from dockyard.cloud.domain.errors import Invalid
from dockyard.cloud.domain.pages import PageRequest
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import Job
from dockyard.cloud.store.tenancy import unscoped

from ..factories import enrol_agent, make_world, system

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def test_finished_jobs_per_utc_day(db: Database, tmp_path: Path) -> None:
    world = make_world(db)
    agent_id = enrol_agent(world, tmp_path)
    laid = [
        ("succeeded", datetime(2026, 3, 9, 23, 30, tzinfo=UTC)),
        ("failed", datetime(2026, 3, 10, 0, 30, tzinfo=UTC)),
        ("timed_out", datetime(2026, 3, 10, 1, 0, tzinfo=UTC)),
        ("succeeded", datetime(2026, 3, 10, 11, 0, tzinfo=UTC)),
        ("running", datetime(2026, 3, 10, 11, 30, tzinfo=UTC)),  # not finished: not counted
        ("succeeded", datetime(2026, 2, 1, 9, 0, tzinfo=UTC)),  # before the window
    ]
    with system(db, world.tenant_id) as ctx:
        for state, at in laid:
            job_id = commands.issue(ctx, agent_id, "noop.echo", {}).job_id
            ctx.session.execute(
                update(Job).where(Job.id == job_id).values(state=state, updated_at=at)
            )
    with system(db, world.tenant_id, clock=ManualClock(NOW)) as ctx:
        if db.is_postgres:
            # Thirteen hours ahead of UTC: a session-zone date() would move 23:30 to the 10th.
            with unscoped(ctx.session, "the test sets its session's time zone") as session:
                session.execute(text("SET LOCAL TIME ZONE 'Pacific/Auckland'"))
        days = dashboard.jobs_by_day(ctx, world.tenant_id, 3)
        assert [(d.day.isoformat(), d.succeeded, d.failed) for d in days] == [
            ("2026-03-08", 0, 0),
            ("2026-03-09", 1, 0),
            ("2026-03-10", 1, 2),
        ]
        assert len(dashboard.jobs_by_day(ctx, world.tenant_id, 90)) == 90
        for bad in (0, 91):
            with pytest.raises(Invalid, match="days is between 1 and 90"):
                dashboard.jobs_by_day(ctx, world.tenant_id, bad)


def test_audit_filters_on_either_database(db: Database) -> None:
    world = make_world(db)
    tag = uuid.uuid4().hex[:6]
    clock = ManualClock(NOW)
    with system(db, world.tenant_id, clock=clock) as ctx:
        for action, outcome in [
            (f"x{tag}.one", "ok"),
            (f"x{tag}_two", "ok"),
            (f"x{tag}.three", "refused"),
        ]:
            clock.advance(timedelta(seconds=1))
            audit.record(ctx, world.tenant_id, action, outcome=outcome)
    with system(db, world.tenant_id) as ctx:
        page = PageRequest(first=50, after=None)

        def actions(where: audit.LogFilter) -> list[str]:
            return [e.node.action for e in audit.log(ctx, world.tenant_id, page, where).edges]

        dotted = audit.LogFilter(action=f"x{tag}.")
        assert actions(dotted) == [f"x{tag}.one", f"x{tag}.three"]
        # `_` is no wildcard: "x…_" finds only the action that has one.
        assert actions(audit.LogFilter(action=f"x{tag}_")) == [f"x{tag}_two"]
        assert actions(audit.LogFilter(action=f"x{tag}", outcome="refused")) == [f"x{tag}.three"]
        newest = audit.LogFilter(action=f"x{tag}", newest_first=True)
        assert actions(newest) == [f"x{tag}.three", f"x{tag}_two", f"x{tag}.one"]
        assert actions(audit.LogFilter(action=f"x{tag}", actor_kind="agent")) == []
