"""The statements delivery runs (`cloud/domain/delivery.py` states the rules over them).

Each reads only the columns it needs and hands them back as typed rows (`PollAgent`,
`PollEntry`, `AckCaller`, `EntryCommand`), and moves commands in bulk UPDATEs whose
conditions the database checks, so a command another transaction moved meanwhile keeps
that state. Every statement runs through the session, so the tenancy wall (`tenancy.py`)
applies to each."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    BindParameter,
    Select,
    Uuid,
    and_,
    any_,
    bindparam,
    case,
    func,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from .models import Agent, AgentEntry, Command, Site, Tenant


class PollAgent(NamedTuple):
    """What a poll reads of the calling agent, its tenant and its site."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    last_seq: int
    revoked_at: datetime | None
    max_flow: str
    modules: list[Any]
    tenant_flow: str
    plan: str
    site_flow: str | None


class PollCommand(NamedTuple):
    """The command an entry carries; `state` as the read found it."""

    id: uuid.UUID
    job_id: uuid.UUID
    name: str
    args: dict[str, Any]
    state: str
    expires_at: datetime
    timeout_s: int


class PollEntry(NamedTuple):
    """One entry in a poll's window, and its command if it carries one."""

    seq: int
    kind: str
    payload: dict[str, Any]
    command: PollCommand | None


@dataclass
class PollRead:
    """A batch of polls' rows: each agent found, and the entries in its window in order."""

    agents: dict[uuid.UUID, PollAgent] = field(default_factory=dict)
    entries: dict[uuid.UUID, list[PollEntry]] = field(default_factory=dict)
    marked: bool = False
    """Whether the read also moved the window's queued commands (on PostgreSQL, in the
    same statement); if not, the caller moves them (`mark_sent`, `mark_expired`)."""


class AckCaller(NamedTuple):
    """What an ack reads of the calling agent."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    revoked_at: datetime | None
    last_seq: int
    acked_seq: int


class EntryCommand(NamedTuple):
    """An acknowledged entry that carries a command."""

    agent_id: uuid.UUID
    seq: int
    command_id: uuid.UUID


_AGENT_COLUMNS = (
    Agent.id,
    Agent.tenant_id,
    Agent.last_seq,
    Agent.revoked_at,
    Agent.max_flow,
    Agent.modules,
    Tenant.flow_mode,
    Tenant.plan,
    Site.max_flow,
)
_ENTRY_COLUMNS = (
    AgentEntry.seq,
    AgentEntry.kind,
    AgentEntry.payload,
    Command.id,
    Command.job_id,
    Command.name,
    Command.args,
    Command.state,
    Command.expires_at,
    Command.timeout_s,
)
_N_AGENT = len(_AGENT_COLUMNS)
_N_ALL = _N_AGENT + len(_ENTRY_COLUMNS)


def _grouped(rows: Sequence[Any], marked: bool) -> PollRead:
    read = PollRead(marked=marked)
    for row in rows:
        agent_id = row[0]
        if agent_id not in read.agents:
            read.agents[agent_id] = PollAgent(*row[:_N_AGENT])
            read.entries[agent_id] = []
        if row[_N_AGENT] is not None:
            seq, kind, payload, command_id = row[_N_AGENT : _N_AGENT + 4]
            command = None if command_id is None else PollCommand(*row[_N_AGENT + 3 : _N_ALL])
            read.entries[agent_id].append(PollEntry(seq, kind, payload, command))
    return read


def poll_read(
    session: Session,
    wanted: dict[uuid.UUID, int],
    tenants: dict[uuid.UUID, uuid.UUID] | None,
    batch: int,
    now: datetime,
    send: tuple[str, str],
    lapse: tuple[str, str],
) -> PollRead:
    """Each agent named in `wanted` with its tenant's and site's settings and the entries
    (and their commands) after `wanted[agent]`, at most `batch` each.

    On PostgreSQL the same statement also moves the window's queued commands of each
    caller that is live (not revoked, of the tenant `tenants` names for it, if it names one): `send`
    (queued to sent, the result due `timeout_s` later) if its delivery deadline is still
    ahead, `lapse` (queued to expired) if it has passed. One statement, so the poll needs
    no transaction of its own: the read and the moves were four round trips (BEGIN, the
    read, the UPDATE, COMMIT) on the path of every delivery. The read sees the states as
    they were before the moves. Elsewhere (SQLite) only the read runs: `marked` is False."""
    if session.get_bind().dialect.name != "postgresql":
        return _grouped(session.execute(_sqlite_read(wanted, batch)).all(), marked=False)
    tenant_of = tenants or {}
    params = {
        "poll_agents": list(wanted),
        "poll_starts": list(wanted.values()),
        "poll_tenants": [tenant_of.get(a) for a in wanted],
        "poll_now": now,
    }
    return _grouped(session.execute(_poll_statement(batch, send, lapse), params).all(), True)


@functools.lru_cache(maxsize=8)
def _poll_statement(batch: int, send: tuple[str, str], lapse: tuple[str, str]) -> Select[Any]:
    """`poll_read`'s statement on PostgreSQL, built once: its values are parameters
    (constructing it anew cost more of the interpreter than the rest of a poll read)."""
    ids = bindparam("poll_agents", type_=ARRAY(Uuid()))
    starts = bindparam("poll_starts", type_=ARRAY(BigInteger()))
    named = bindparam("poll_tenants", type_=ARRAY(Uuid()))
    windows = (
        func.unnest(ids, starts, named).table_valued("agent_id", "after", "tenant").render_derived()
    )
    of_tenant = or_(windows.c.tenant.is_(None), Agent.tenant_id == windows.c.tenant)
    live = and_(Agent.revoked_at.is_(None), of_tenant)
    within = and_(
        AgentEntry.agent_id == Agent.id,
        AgentEntry.seq > windows.c.after,
        AgentEntry.seq <= windows.c.after + batch,
    )
    labelled = [c.label(f"c{i}") for i, c in enumerate((*_AGENT_COLUMNS, *_ENTRY_COLUMNS))]
    rows = (
        select(*labelled, live.label("live"))
        .select_from(Agent)
        .join(windows, Agent.id == windows.c.agent_id)
        .join(Tenant, Tenant.id == Agent.tenant_id)
        .join(Site, Site.id == Agent.site_id)
        .outerjoin(AgentEntry, within)
        .outerjoin(Command, Command.id == AgentEntry.command_id)
        # The agents also by `= ANY(ids)`, so they are found by their key whatever the
        # planner thinks of the tenant's size.
        .where(Agent.id == any_(ids))
        .cte("poll_rows")
    )
    at: BindParameter[datetime] = bindparam("poll_now", type_=Command.expires_at.type)
    command_id, state, expires_at = (rows.c[f"c{_N_AGENT + i}"] for i in (3, 7, 8))
    queued = and_(rows.c.live, state == send[0])
    to_send = select(command_id).where(queued, expires_at > at)
    to_lapse = select(command_id).where(queued, expires_at <= at)
    sent = (
        update(Command)
        .where(Command.id.in_(to_send), Command.state == send[0])
        .values(
            state=send[1],
            sent_at=at,
            result_due_at=at + func.make_interval(0, 0, 0, 0, 0, 0, Command.timeout_s),
        )
        .returning(Command.id)
        .cte("poll_sent")
    )
    lapsed = (
        update(Command)
        .where(Command.id.in_(to_lapse), Command.state == lapse[0])
        .values(state=lapse[1], finished_at=at)
        .returning(Command.id)
        .cte("poll_lapsed")
    )
    names = [rows.c[f"c{i}"] for i in range(len(labelled))]
    return select(*names).add_cte(sent, lapsed).order_by(rows.c.c0, rows.c[f"c{_N_AGENT}"])


def _sqlite_read(wanted: dict[uuid.UUID, int], batch: int) -> Select[Any]:
    """The read alone, its windows an IN list and an OR of ranges (SQLite has no arrays)."""
    within = or_(
        *(
            and_(Agent.id == a, AgentEntry.seq > n, AgentEntry.seq <= n + batch)
            for a, n in wanted.items()
        )
    )
    return (
        select(*_AGENT_COLUMNS, *_ENTRY_COLUMNS)
        .select_from(Agent)
        .join(Tenant, Tenant.id == Agent.tenant_id)
        .join(Site, Site.id == Agent.site_id)
        .outerjoin(AgentEntry, and_(AgentEntry.agent_id == Agent.id, within))
        .outerjoin(Command, Command.id == AgentEntry.command_id)
        .where(Agent.id.in_(list(wanted)))
        .order_by(Agent.id, AgentEntry.seq)
    )


def mark_expired(
    session: Session, command_ids: list[uuid.UUID], now: datetime, move: tuple[str, str]
) -> None:
    """Commands past their delivery deadline make `move` (from, to: queued to expired)."""
    session.execute(
        update(Command)
        .where(Command.id.in_(command_ids), Command.state == move[0])
        .values(state=move[1], finished_at=now)
        .execution_options(synchronize_session=False)
    )


def mark_sent(
    session: Session,
    command_ids: list[uuid.UUID],
    now: datetime,
    result_due_at: datetime,
    move: tuple[str, str],
) -> None:
    """Commands handed out make `move` (queued to sent), their result due at
    `result_due_at`."""
    session.execute(
        update(Command)
        .where(Command.id.in_(command_ids), Command.state == move[0])
        .values(state=move[1], sent_at=now, result_due_at=result_due_at)
        .execution_options(synchronize_session=False)
    )


def ack(
    session: Session,
    acks: dict[tuple[uuid.UUID, int], str | None],
    tenants: dict[uuid.UUID, uuid.UUID] | None,
    now: datetime,
    accept: tuple[str, str],
    reject: tuple[str, str],
) -> tuple[list[AckCaller], bool]:
    """The callers of a batch of acks (each agent acking, as it was before the acks), and
    whether their acks were applied in the same statement (on PostgreSQL; elsewhere the
    caller applies them with `entry_commands`, `mark_acked` and `set_acked_heads`).

    `acks` maps (agent, seq) to None (accepted) or the code of a rejection. Applied only
    for each caller that is live (not revoked, of the tenant `tenants` names, if any) and
    whose highest ack lies within its sequence: every command of an acked entry gets its
    first acknowledgement time and, from `sent`, moves to `accept`'s or `reject`'s state
    (a rejection with its code and an end); the agent's acknowledged head moves up to its
    highest ack, never down. One statement instead of a transaction of six round trips."""
    agent_ids = list(dict.fromkeys(a for a, _ in acks))
    if session.get_bind().dialect.name != "postgresql":
        return ack_callers(session, agent_ids), False
    tenant_of = tenants or {}
    params = {
        "ack_agents": [a for a, _ in acks],
        "ack_seqs": [n for _, n in acks],
        "ack_codes": list(acks.values()),
        "ack_callers": agent_ids,
        "ack_tenants": [tenant_of.get(a) for a in agent_ids],
        "ack_now": now,
    }
    found = session.execute(_ack_statement(accept, reject), params).all()
    return [AckCaller(*row) for row in found], True


@functools.lru_cache(maxsize=4)
def _ack_statement(accept: tuple[str, str], reject: tuple[str, str]) -> Select[Any]:
    """`ack`'s statement on PostgreSQL, built once; its values are parameters."""
    rows = (
        func.unnest(
            bindparam("ack_agents", type_=ARRAY(Uuid())),
            bindparam("ack_seqs", type_=ARRAY(BigInteger())),
            bindparam("ack_codes", type_=ARRAY(Command.result_code.type)),
        )
        .table_valued("agent_id", "seq", "code")
        .render_derived()
    )
    given = select(rows.c.agent_id, rows.c.seq, rows.c.code).cte("ack_given")
    top = (
        select(given.c.agent_id, func.max(given.c.seq).label("top"))
        .group_by(given.c.agent_id)
        .subquery("ack_top")
    )
    ids = bindparam("ack_callers", type_=ARRAY(Uuid()))
    named = bindparam("ack_tenants", type_=ARRAY(Uuid()))
    windows = func.unnest(ids, named).table_valued("agent_id", "tenant").render_derived()
    ok = and_(
        Agent.revoked_at.is_(None),
        or_(windows.c.tenant.is_(None), Agent.tenant_id == windows.c.tenant),
        top.c.top <= Agent.last_seq,
    )
    callers = (
        select(
            Agent.id,
            Agent.tenant_id,
            Agent.revoked_at,
            Agent.last_seq,
            Agent.acked_seq,
            top.c.top,
            ok.label("ok"),
        )
        .join(windows, Agent.id == windows.c.agent_id)
        .join(top, top.c.agent_id == Agent.id)
        .where(Agent.id == any_(ids))
        .cte("ack_callers")
    )
    targets = (
        select(AgentEntry.command_id, given.c.code)
        .select_from(given)
        .join(callers, and_(callers.c.id == given.c.agent_id, callers.c.ok))
        .join(
            AgentEntry, and_(AgentEntry.agent_id == given.c.agent_id, AgentEntry.seq == given.c.seq)
        )
        .where(AgentEntry.command_id.is_not(None))
        .cte("ack_targets")
    )
    at: BindParameter[datetime] = bindparam("ack_now", type_=Command.acked_at.type)
    sent = Command.state == accept[0]
    rejecting = and_(Command.state == reject[0], targets.c.code.is_not(None))
    moved = (
        update(Command)
        .where(Command.id == targets.c.command_id, or_(sent, Command.acked_at.is_(None)))
        .values(
            acked_at=func.coalesce(Command.acked_at, at),
            state=case((rejecting, reject[1]), (sent, accept[1]), else_=Command.state),
            result_code=case((rejecting, targets.c.code), else_=Command.result_code),
            finished_at=case((rejecting, at), else_=Command.finished_at),
        )
        .returning(Command.id)
        .cte("ack_moved")
    )
    heads = (
        update(Agent)
        .where(Agent.id == callers.c.id, callers.c.ok, Agent.acked_seq < callers.c.top)
        .values(acked_seq=callers.c.top)
        .returning(Agent.id)
        .cte("ack_heads")
    )
    return select(*(callers.c[k] for k in AckCaller._fields)).add_cte(moved, heads)


def ack_callers(session: Session, agent_ids: list[uuid.UUID]) -> list[AckCaller]:
    """Each agent named, as far as an ack needs it."""
    rows = session.execute(
        select(Agent.id, Agent.tenant_id, Agent.revoked_at, Agent.last_seq, Agent.acked_seq).where(
            Agent.id.in_(agent_ids)
        )
    ).all()
    return [AckCaller(*row) for row in rows]


def entry_commands(session: Session, entries: list[tuple[uuid.UUID, int]]) -> list[EntryCommand]:
    """The entries named that carry a command."""
    rows = session.execute(
        select(AgentEntry.agent_id, AgentEntry.seq, AgentEntry.command_id).where(
            # One expanding parameter, so the statement compiles once for every batch
            # (an OR of one clause per agent was compiled anew each time).
            tuple_(AgentEntry.agent_id, AgentEntry.seq).in_(entries),
            AgentEntry.command_id.is_not(None),
        )
    ).all()
    return [EntryCommand(*row) for row in rows]


def mark_acked(
    session: Session,
    now: datetime,
    command_ids: list[uuid.UUID],
    move: tuple[str, str],
    rejected: str | None,
) -> None:
    """First acknowledgement time for each command; those in `move`'s first state make
    it (sent to acked, or to rejected with the code `rejected` and an end)."""
    sent = Command.state == move[0]
    moved: dict[str, Any] = {"acked_at": func.coalesce(Command.acked_at, now)}
    moved["state"] = case((sent, move[1]), else_=Command.state)
    if rejected is not None:
        moved["result_code"] = case((sent, rejected), else_=Command.result_code)
        moved["finished_at"] = case((sent, now), else_=Command.finished_at)
    session.execute(
        update(Command)
        .where(Command.id.in_(command_ids), or_(sent, Command.acked_at.is_(None)))
        .values(**moved)
        .execution_options(synchronize_session=False)
    )


def set_acked_heads(session: Session, heads: dict[uuid.UUID, int]) -> None:
    """Each agent's acknowledged head, by primary key in one executemany."""
    session.execute(update(Agent), [{"id": a, "acked_seq": h} for a, h in heads.items()])
