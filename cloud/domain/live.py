"""What the portal sees change live, and how a subscriber reads it again.

A change is a kind, a tenant and an id, nothing more: it crosses replicas on the bus
(`cloud/bus.py`) and says only *that* something changed. A subscriber re-reads the row
through the domain with its own principal (`job`, `agent` below), so what it is shown is
exactly what a query would show it; another tenant's change re-reads as missing.

Changes are noticed on the session as rows are flushed, so every path that changes a job
or an agent through the ORM is covered without each remembering to announce it: a job's
progress or state (an agent's report, a lapsed command); an agent enrolled, revoked,
renamed or its modules changed. The frequent bookkeeping (sequence numbers, acks,
last-seen times) is written with Core statements or columns not listed here, and
announces nothing; a path that writes what the portal shows with Core calls `announce`.
They are announced once the transaction commits (a rolled-back change never is).
"""

from __future__ import annotations

import enum
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import inspect, or_, select
from sqlalchemy.orm import Session

from dockyard.cloud.store.models import Agent, Job
from dockyard.cloud.store.tenancy import unscoped

from . import agents, jobs
from .context import Ctx
from .dashboard import QUIET_AFTER
from .errors import Forbidden, NotFound
from .modules import Timer, TimerEnv

KEY = "dockyard.live"
"""Where a session keeps the changes it flushed, until its commit announces them."""

AGENT_COLUMNS = ("revoked_at", "name", "modules", "max_flow", "site_id")
"""An agent's columns whose change the portal shows; the rest is bookkeeping."""


class Kind(enum.StrEnum):
    AGENT = "a"
    JOB = "j"


@dataclass(frozen=True)
class Change:
    kind: Kind
    tenant_id: uuid.UUID
    id: uuid.UUID

    def encode(self) -> str:
        return f"{self.kind.value}{self.tenant_id.hex}{self.id.hex}"

    @classmethod
    def decode(cls, text: str) -> Change:
        """The inverse of `encode`; ValueError for anything else."""
        if len(text) != 65:
            raise ValueError("a live change is 65 characters")
        return cls(Kind(text[0]), uuid.UUID(hex=text[1:33]), uuid.UUID(hex=text[33:]))


def _changed_agent(agent: Agent) -> bool:
    state: Any = inspect(agent)
    return any(state.attrs[c].history.has_changes() for c in AGENT_COLUMNS)


def noticed(session: Session) -> None:
    """Remember the jobs and agents a flush wrote: called after it, when their ids are set
    and the session's new and dirty lists and the attributes' history still show what it
    wrote."""
    found: set[Change] = session.info.setdefault(KEY, set())
    for obj in session.new:
        if isinstance(obj, Job | Agent) and obj.tenant_id is not None and obj.id is not None:
            kind = Kind.JOB if isinstance(obj, Job) else Kind.AGENT
            found.add(Change(kind, obj.tenant_id, obj.id))
    for obj in session.dirty:
        if isinstance(obj, Job):
            found.add(Change(Kind.JOB, obj.tenant_id, obj.id))
        elif isinstance(obj, Agent) and _changed_agent(obj):
            found.add(Change(Kind.AGENT, obj.tenant_id, obj.id))


def announce(session: Session, changes: set[Change]) -> None:
    """Announce, at the commit, rows written by Core statements that flushes do not see
    (a burst of commands writes its jobs with `insert_together`)."""
    found: set[Change] = session.info.setdefault(KEY, set())
    found |= changes


def came_online(session: Session, seen: Mapping[uuid.UUID, datetime]) -> None:
    """Announce the agents among `seen` (polled since the last sweep) whose stored last-seen
    time is none or older than `QUIET_AFTER`: they turn online for the portal once the sweep
    stores their new one, in this transaction. Turning quiet is `went_quiet`'s."""
    if not seen:
        return
    quiet_before = max(seen.values()) - QUIET_AFTER
    with unscoped(session, "which polling agents were quiet, for the portal's live view"):
        rows = session.execute(
            select(Agent.id, Agent.tenant_id).where(
                Agent.id.in_(sorted(seen)),
                or_(Agent.last_seen_at.is_(None), Agent.last_seen_at < quiet_before),
            )
        ).all()
    announce(session, {Change(Kind.AGENT, tenant_id, agent_id) for agent_id, tenant_id in rows})


def went_quiet(session: Session, now: datetime, window: timedelta) -> int:
    """Announce the agents that turned quiet in the `window` before `now`: their last poll is
    just over `QUIET_AFTER` old. No row changes when an agent falls silent (it is the clock
    that moves), so nothing else would tell a subscriber. Returns how many were announced.

    Every replica runs this, and the timer passes a window twice its period so that a late
    pass misses no one: an agent may be announced more than once, which costs a subscriber
    one more re-read of the same row."""
    since, until = now - QUIET_AFTER - window, now - QUIET_AFTER
    with unscoped(session, "which agents turned quiet, for the portal's live view"):
        rows = session.execute(
            select(Agent.id, Agent.tenant_id).where(
                Agent.revoked_at.is_(None),
                Agent.last_seen_at > since,
                Agent.last_seen_at <= until,
            )
        ).all()
    announce(session, {Change(Kind.AGENT, tenant_id, agent_id) for agent_id, tenant_id in rows})
    return len(rows)


def run_quiet(env: TimerEnv) -> Counter[str]:
    window = timedelta(seconds=2 * env.settings.quiet_check_interval_s)
    with env.db.transaction() as session:
        return Counter({"announced": went_quiet(session, env.clock.now(), window)})


QUIET_TIMER = Timer("agents.quiet", lambda s: s.quiet_check_interval_s, run_quiet)


def take(session: Session) -> set[Change]:
    """The changes to announce (after the commit) or to forget (after a rollback)."""
    found: set[Change] = session.info.pop(KEY, set())
    return found


# --- reads for a subscriber ------------------------------------------------------------------


def job(ctx: Ctx, job_id: uuid.UUID) -> Job | None:
    """The job as the subscriber may see it now; None if it may not (or it is gone)."""
    try:
        return jobs.get(ctx, job_id)
    except (NotFound, Forbidden):
        return None


def agent(ctx: Ctx, agent_id: uuid.UUID) -> Agent | None:
    try:
        return agents.get(ctx, agent_id)
    except (NotFound, Forbidden):
        return None
