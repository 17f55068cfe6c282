"""The figures the portal's dashboard opens with: agents by state and jobs by outcome.
Each is one aggregate statement over the tenant's rows; a module adds its own (the VM
module its catalog's, `cloud/modules/vm/dashboard.py`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from dockyard.cloud.store.models import Agent, Job
from dockyard.cloud.store.types import utc_day

from .context import Ctx
from .errors import Invalid
from .permissions import Permission as P
from .states import JobState

QUIET_AFTER = timedelta(minutes=10)
"""An agent not heard from for longer is quiet: its polls stopped, or never began."""
RECENT = timedelta(hours=24)
"""How far back finished jobs are counted."""

MAX_DAYS = 90
"""How many days of history `jobs_by_day` gives at most."""

FAILED = frozenset({JobState.FAILED, JobState.TIMED_OUT, JobState.REJECTED, JobState.EXPIRED})


@dataclass(frozen=True)
class AgentCounts:
    online: int
    """Not revoked, heard from within `QUIET_AFTER`."""
    quiet: int
    """Not revoked, silent for longer (or never heard from since docking)."""
    revoked: int


@dataclass(frozen=True)
class JobCounts:
    pending: int
    running: int
    succeeded_recently: int
    failed_recently: int
    """Failed, timed out, rejected or expired within `RECENT`."""


def check(ctx: Ctx, tenant_id: uuid.UUID) -> None:
    """The dashboard is seen by whoever sees the tenant; its parts check their own reads."""
    ctx.principal.require(tenant_id, P.TENANT_READ)


def agents(ctx: Ctx, tenant_id: uuid.UUID) -> AgentCounts:
    ctx.principal.require(tenant_id, P.AGENT_READ)
    return count_agents(ctx.session, ctx.now(), Agent.tenant_id == tenant_id)


def count_agents(session: Session, now: datetime, *where: ColumnElement[bool]) -> AgentCounts:
    """Agents by state in one aggregate: a tenant's here, every tenant's for `fleet.py`."""
    live = Agent.revoked_at.is_(None)
    recent = Agent.last_seen_at >= now - QUIET_AFTER
    online, quiet, revoked = session.execute(
        select(
            func.count().filter(live, recent),
            func.count().filter(live, ~recent | Agent.last_seen_at.is_(None)),
            func.count().filter(~live),
        ).where(*where)
    ).one()
    return AgentCounts(int(online), int(quiet), int(revoked))


def jobs(ctx: Ctx, tenant_id: uuid.UUID) -> JobCounts:
    ctx.principal.require(tenant_id, P.JOB_READ)
    since = ctx.now() - RECENT
    recent = Job.updated_at >= since
    failed = Job.state.in_([s.value for s in FAILED])
    row = ctx.session.execute(
        select(
            func.count().filter(Job.state == JobState.PENDING.value),
            func.count().filter(Job.state == JobState.RUNNING.value),
            func.count().filter(Job.state == JobState.SUCCEEDED.value, recent),
            func.count().filter(failed, recent),
        ).where(Job.tenant_id == tenant_id)
    ).one()
    return JobCounts(*(int(n) for n in row))


@dataclass(frozen=True)
class JobDay:
    day: date
    """A UTC day."""
    succeeded: int
    failed: int
    """Failed, timed out, rejected or expired that day."""


def jobs_by_day(ctx: Ctx, tenant_id: uuid.UUID, days: int) -> list[JobDay]:
    """Finished jobs per UTC day, by the day they finished, for the last `days` days with
    today, oldest first, every day present (a day without jobs counts zero): one grouped
    statement over the tenant's jobs."""
    ctx.principal.require(tenant_id, P.JOB_READ)
    each = window(ctx, days)
    since = datetime.combine(each[0], time(), UTC)
    day = utc_day(Job.updated_at)
    failed = Job.state.in_([s.value for s in FAILED])
    rows = ctx.session.execute(
        select(
            day,
            func.count().filter(Job.state == JobState.SUCCEEDED.value),
            func.count().filter(failed),
        )
        .where(Job.tenant_id == tenant_id, Job.updated_at >= since)
        .group_by(day)
    ).all()
    counts = {date.fromisoformat(str(d)[:10]): (int(ok), int(bad)) for d, ok, bad in rows}
    return [JobDay(d, *counts.get(d, (0, 0))) for d in each]


def window(ctx: Ctx, days: int) -> list[date]:
    """The last `days` UTC days with today, oldest first: the charts' window (`Invalid`
    outside 1 to `MAX_DAYS`)."""
    if not 1 <= days <= MAX_DAYS:
        raise Invalid(f"days is between 1 and {MAX_DAYS}")
    today = ctx.now().astimezone(UTC).date()
    return [today - timedelta(days=days - 1 - n) for n in range(days)]
