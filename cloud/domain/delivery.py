"""Delivery: what an agent sees when it polls and what its acks move, for one agent or a
batch of them in one transaction (`batching.py` gathers the polls and acks arriving
together). The states moved here and the moves allowed are `states.py`'s; how a poll is
held before it is answered is `cloud/holding.py`'s.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from sqlalchemy.orm import Session

from dockyard.agent.protocol import (
    Ack,
    AckOutcome,
    CommandEntry,
    Entry,
    FlowMode,
    PolicyEntry,
    vocabulary,
)
from dockyard.cloud.store import delivery as store

from .agents import active, flow_mode, settings_of
from .context import Ctx
from .errors import DomainError, FlowModeForbids, Invalid, NotFound, Unauthenticated
from .states import CommandState as CS
from .states import moves

POLL_BATCH = 200

# The moves a poll and an ack make in bulk, checked against the one table (states.py).
DELIVERY_MOVES = moves(
    (CS.QUEUED, CS.SENT), (CS.QUEUED, CS.EXPIRED), (CS.SENT, CS.ACKED), (CS.SENT, CS.REJECTED)
)


@dataclass
class PollView:
    entries: list[Entry]
    last_seq: int
    """How far this answer covers the agent's sequence (its head, unless `more`)."""
    mode: FlowMode
    features: dict[str, list[str]]
    more: bool = False
    """Entries beyond `last_seq` wait for the next poll (at most POLL_BATCH per answer)."""


class _Calling(Protocol):
    """What `_caller` reads of an agent's row."""

    @property
    def tenant_id(self) -> uuid.UUID: ...
    @property
    def revoked_at(self) -> datetime | None: ...


C = TypeVar("C", bound=_Calling)


def _caller(
    row: C | None, agent_id: uuid.UUID, expect: dict[uuid.UUID, uuid.UUID] | None
) -> C | None:
    """A calling agent's row, or None if it is unknown, revoked, or not of the tenant its
    token names (a token's tenant must be the agent's own)."""
    if row is None or row.revoked_at is not None:
        return None
    if expect is not None and row.tenant_id != expect.get(agent_id):
        return None
    return row


T = TypeVar("T")


def _alone(results: Mapping[uuid.UUID, T | DomainError], agent_id: uuid.UUID) -> T:
    """One agent's answer from a batch's, its error raised."""
    result = results[agent_id]
    if isinstance(result, DomainError):
        raise result
    return result


def poll_view(ctx: Ctx, agent_id: uuid.UUID, after: int) -> PollView:
    """The entries newer than `after`. A command whose delivery deadline has passed is
    marked `expired` here and never handed out; one handed out becomes `sent`."""
    return _alone(poll_views(ctx, {agent_id: after}), agent_id)


def poll_views(
    ctx: Ctx,
    wanted: dict[uuid.UUID, int],
    expect_tenant: dict[uuid.UUID, uuid.UUID] | None = None,
) -> dict[uuid.UUID, PollView | Unauthenticated]:
    """`poll_view` for many agents in one transaction: a burst of wake-ups is answered with
    a few statements instead of a few per agent. A revoked agent gets its error back.

    One statement reads only the columns an answer needs, as plain rows: each agent with
    its tenant's and site's settings, outer-joined to the entries (and their commands) in
    its window. Loading whole rows as ORM objects (and their JSON columns), in three
    statements, took most of the time of a 200-agent read."""
    now = ctx.now()
    rows = store.poll_rows(ctx.session, wanted, POLL_BATCH)
    found: dict[uuid.UUID, Any] = {}
    rows_by_agent: dict[uuid.UUID, list[Any]] = {}
    for each in rows:
        found.setdefault(each[0], each)
        if each.seq is not None:
            rows_by_agent.setdefault(each[0], []).append(each[store.POLL_AGENT_COLUMNS :])
    out: dict[uuid.UUID, PollView | Unauthenticated] = {}
    live: dict[uuid.UUID, Any] = {}
    for agent_id in wanted:
        row = _caller(found.get(agent_id), agent_id, expect_tenant)
        if row is None:
            out[agent_id] = Unauthenticated("this agent was revoked; enrol it again")
        else:
            live[agent_id] = row
    known: dict[tuple[Any, ...], tuple[FlowMode, dict[str, list[str]]]] = {}
    marks = _Marks()
    for agent_id, row in live.items():
        # Worked out once per distinct (tenant, site, ceiling, modules) in the batch.
        _, _, last_seq, _, agent_flow, modules, tenant_flow, plan, site_flow = row[:9]
        key = (tenant_flow, plan, site_flow, agent_flow, tuple(m["name"] for m in modules))
        settings = known.get(key)
        if settings is None:
            settings = known[key] = settings_of(tenant_flow, plan, site_flow, agent_flow, modules)
        entries = _entries(rows_by_agent.get(agent_id, []), now, marks)
        # A sequence is numbered without gaps, so the next POLL_BATCH numbers are at most
        # POLL_BATCH rows, whatever was skipped (expired, cancelled) among them.
        limit = wanted[agent_id] + POLL_BATCH
        more = last_seq > limit
        out[agent_id] = PollView(entries, limit if more else last_seq, *settings, more)
    marks.apply(ctx.session, now)
    return out


@dataclass
class _Marks:
    """The commands a batch of polls expires or hands out, written as a few UPDATEs for
    the whole batch: the unit of work wrote one UPDATE per command, a fifth of a burst's
    read time. Each UPDATE only moves commands still queued, so a command another
    transaction moved meanwhile keeps that state."""

    expired: list[uuid.UUID] = field(default_factory=list)
    sent: dict[int, list[uuid.UUID]] = field(default_factory=dict)
    """Handed-out commands by their timeout in seconds (their result is due then)."""

    def apply(self, session: Session, now: datetime) -> None:
        if self.expired:
            store.mark_expired(session, self.expired, now, (CS.QUEUED, CS.EXPIRED))
        for timeout_s, ids in self.sent.items():
            due = now + timedelta(seconds=timeout_s)
            store.mark_sent(session, ids, now, due, (CS.QUEUED, CS.SENT))


def _entries(rows: list[Any], now: datetime, marks: _Marks) -> list[Entry]:
    """The answer's entries from `poll_views`' rows (an entry's columns, then its
    command's, all None for an entry that is not a command)."""
    out: list[Entry] = []
    for seq, kind, payload, command_id, job_id, name, args, state, expires_at, timeout_s in rows:
        if command_id is not None:
            if state == CS.QUEUED and expires_at <= now:
                marks.expired.append(command_id)
                continue
            if state in (CS.EXPIRED, CS.CANCELLED):
                continue
            if state == CS.QUEUED:
                marks.sent.setdefault(timeout_s, []).append(command_id)
            out.append(
                CommandEntry(
                    seq=seq,
                    command_id=command_id,
                    job_id=job_id,
                    name=name,
                    args=args,
                    expires_at=expires_at,
                    timeout_s=timeout_s,
                )
            )
        elif kind == "policy":
            out.append(PolicyEntry(seq=seq, **payload))
    return out


def check_ack_codes(ctx: Ctx, agent_id: uuid.UUID, acks: list[Ack]) -> None:
    """Refuse acks whose codes `config` mode does not declare (an ack names no module, so
    any module's code passes); called before the batched write, which never sees them."""
    if vocabulary.fits(a.code for a in acks):
        return
    if flow_mode(ctx.session, active(ctx, agent_id)) is FlowMode.CONFIG:
        raise FlowModeForbids("flow mode config carries only the codes its modules declare")


def ack(ctx: Ctx, agent_id: uuid.UUID, acks: list[Ack]) -> int:
    return _alone(ack_many(ctx, {agent_id: acks}), agent_id)


def ack_many(
    ctx: Ctx,
    wanted: dict[uuid.UUID, list[Ack]],
    expect_tenant: dict[uuid.UUID, uuid.UUID] | None = None,
) -> dict[uuid.UUID, int | DomainError]:
    """Mark entries delivered for many agents in one transaction; each agent gets its
    acknowledged head, or its own error (revoked, or a number beyond its sequence) with
    none of its acks applied.

    Only the columns needed are read, and the commands move in a few UPDATEs for the
    whole batch whose conditions are checked by the database: a command moves to
    `acked` (or `rejected`) only from `sent`, so a job event that moved it on meanwhile
    is never undone."""
    now = ctx.now()
    callers = store.ack_callers(ctx.session, list(wanted))
    found = {row.id: row for row in callers}
    out: dict[uuid.UUID, int | DomainError] = {}
    by_agent: dict[uuid.UUID, dict[int, Ack]] = {}
    for agent_id, acks in wanted.items():
        agent = _caller(found.get(agent_id), agent_id, expect_tenant)
        by_seq = {a.seq: a for a in acks}
        if agent is None:
            out[agent_id] = Unauthenticated("this agent was revoked; enrol it again")
        elif not by_seq:
            out[agent_id] = Invalid("an ack names at least one entry")
        elif max(by_seq) > agent.last_seq:
            out[agent_id] = NotFound("sequence entry")
        else:
            by_agent[agent_id] = by_seq
    if not by_agent:
        return out
    rows = store.entry_commands(
        ctx.session, [(a, seq) for a, by_seq in by_agent.items() for seq in by_seq]
    )
    accepted: list[uuid.UUID] = []
    rejected: dict[str, list[uuid.UUID]] = {}
    for agent_id, seq, command_id in rows:
        a = by_agent[agent_id][seq]
        if a.outcome is AckOutcome.REJECTED:
            rejected.setdefault(a.code or "rejected", []).append(command_id)
        else:
            accepted.append(command_id)
    if accepted:
        store.mark_acked(ctx.session, now, accepted, (CS.SENT, CS.ACKED), None)
    for code, ids in rejected.items():
        store.mark_acked(ctx.session, now, ids, (CS.SENT, CS.REJECTED), code)
    heads: dict[uuid.UUID, int] = {}
    for agent_id, by_seq in by_agent.items():
        agent = found[agent_id]
        out[agent_id] = head = max(agent.acked_seq, max(by_seq))
        if head != agent.acked_seq:
            heads[agent_id] = head
    if heads:
        store.set_acked_heads(ctx.session, heads)
    return out
