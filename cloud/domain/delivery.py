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
    settings_tag,
    vocabulary,
)
from dockyard.cloud.store import delivery as store

from .agents import active, flow_mode, settings_of
from .context import Ctx
from .errors import DomainError, FlowModeForbids, Invalid, NotFound, Unauthenticated
from .states import CommandState as CS
from .states import moves

POLL_BATCH = 200

# The moves a poll (hand out, lapse) and an ack (accept, reject) make in bulk, checked
# against the one table (states.py).
POLL_MOVES = moves((CS.QUEUED, CS.SENT), (CS.QUEUED, CS.EXPIRED))
ACK_MOVES = moves((CS.SENT, CS.ACKED), (CS.SENT, CS.REJECTED))


@dataclass
class PollView:
    entries: list[Entry]
    last_seq: int
    """How far this answer covers the agent's sequence (its head, unless `more`)."""
    mode: FlowMode
    features: dict[str, list[str]]
    tag: str
    """`settings_tag` of `mode` and `features`, worked out once per distinct settings in a
    batch (hashing them for each of a burst's 200 answers cost a quarter of answering)."""
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

    One statement reads only the columns an answer needs: each agent with its tenant's and
    site's settings, outer-joined to the entries (and their commands) in its window
    (loading whole rows as ORM objects, in three statements, took most of the time of a
    200-agent read). On PostgreSQL the same statement hands out the queued commands it
    reads and lapses those past their deadline, by the rule `_entries` answers with; on
    SQLite `_Marks` moves them after the read. Either way a move is made only from
    `queued`, so a command cancelled meanwhile stays cancelled."""
    now = ctx.now()
    read = store.poll_read(ctx.session, wanted, expect_tenant, POLL_BATCH, now, *POLL_MOVES)
    out: dict[uuid.UUID, PollView | Unauthenticated] = {}
    known: dict[tuple[Any, ...], tuple[FlowMode, dict[str, list[str]], str]] = {}
    marks = _Marks()
    for agent_id, after in wanted.items():
        row = _caller(read.agents.get(agent_id), agent_id, expect_tenant)
        if row is None:
            out[agent_id] = Unauthenticated("this agent was revoked; enrol it again")
            continue
        # Worked out once per distinct (tenant, site, ceiling, modules) in the batch.
        key = (row.tenant_flow, row.plan, row.site_flow, row.max_flow)
        key += tuple(m["name"] for m in row.modules)
        settings = known.get(key)
        if settings is None:
            mode, features = settings_of(
                row.tenant_flow, row.plan, row.site_flow, row.max_flow, row.modules
            )
            settings = known[key] = (mode, features, settings_tag(mode, features))
        entries = _entries(read.entries.get(agent_id, []), now, marks)
        # A sequence is numbered without gaps, so the next POLL_BATCH numbers are at most
        # POLL_BATCH rows, whatever was skipped (expired, cancelled) among them.
        limit = after + POLL_BATCH
        more = row.last_seq > limit
        out[agent_id] = PollView(entries, limit if more else row.last_seq, *settings, more)
    if not read.marked:
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
        send, lapse = POLL_MOVES
        if self.expired:
            store.mark_expired(session, self.expired, now, lapse)
        for timeout_s, ids in self.sent.items():
            store.mark_sent(session, ids, now, now + timedelta(seconds=timeout_s), send)


def _entries(rows: list[store.PollEntry], now: datetime, marks: _Marks) -> list[Entry]:
    """The answer's entries from an agent's window: a command is handed out unless it
    was cancelled, expired, or is still queued past its delivery deadline (then it is
    lapsed); a queued one handed out is marked sent. The states are those the read found
    (before its own moves, on PostgreSQL)."""
    out: list[Entry] = []
    for seq, kind, payload, command in rows:
        if command is not None:
            if command.state == CS.QUEUED and command.expires_at <= now:
                marks.expired.append(command.id)
                continue
            if command.state in (CS.EXPIRED, CS.CANCELLED):
                continue
            if command.state == CS.QUEUED:
                marks.sent.setdefault(command.timeout_s, []).append(command.id)
            out.append(
                CommandEntry(
                    seq=seq,
                    command_id=command.id,
                    job_id=command.job_id,
                    name=command.name,
                    args=command.args,
                    expires_at=command.expires_at,
                    timeout_s=command.timeout_s,
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
    out: dict[uuid.UUID, int | DomainError] = {}
    asked: dict[uuid.UUID, dict[int, Ack]] = {}
    for agent_id, acks in wanted.items():
        if acks:
            asked[agent_id] = {a.seq: a for a in acks}
        else:
            out[agent_id] = Invalid("an ack names at least one entry")
    if not asked:
        return out
    codes = {
        (agent_id, seq): (a.code or "rejected") if a.outcome is AckOutcome.REJECTED else None
        for agent_id, by_seq in asked.items()
        for seq, a in by_seq.items()
    }
    callers, applied = store.ack(ctx.session, codes, expect_tenant, now, *ACK_MOVES)
    found = {row.id: row for row in callers}
    valid: dict[uuid.UUID, int] = {}
    for agent_id, by_seq in asked.items():
        agent = _caller(found.get(agent_id), agent_id, expect_tenant)
        top = max(by_seq)
        if agent is None:
            out[agent_id] = Unauthenticated("this agent was revoked; enrol it again")
        elif top > agent.last_seq:
            out[agent_id] = NotFound("sequence entry")
        else:
            valid[agent_id] = out[agent_id] = max(agent.acked_seq, top)
    if not applied and valid:
        _apply_acks(ctx, now, {a: asked[a] for a in valid}, found)
    return out


def _apply_acks(
    ctx: Ctx,
    now: datetime,
    by_agent: dict[uuid.UUID, dict[int, Ack]],
    found: dict[uuid.UUID, store.AckCaller],
) -> None:
    """The writes of valid acks where `store.ack` did not make them in its statement."""
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
        store.mark_acked(ctx.session, now, accepted, ACK_MOVES[0], None)
    for code, ids in rejected.items():
        store.mark_acked(ctx.session, now, ids, ACK_MOVES[1], code)
    heads = {
        agent_id: max(by_seq)
        for agent_id, by_seq in by_agent.items()
        if max(by_seq) > found[agent_id].acked_seq
    }
    if heads:
        store.set_acked_heads(ctx.session, heads)
