"""The statements delivery runs (`cloud/domain/delivery.py` states the rules over them).

Each reads only the columns it needs, as plain rows, and moves commands in bulk UPDATEs
whose conditions the database checks, so a command another transaction moved meanwhile
keeps that state. Every statement runs through the session, so the tenancy wall
(`tenancy.py`) applies to each."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, case, func, or_, select, tuple_, update
from sqlalchemy.orm import Session

from .db import outerjoin_windows
from .models import Agent, AgentEntry, Command, Site, Tenant

POLL_AGENT_COLUMNS = 9
"""A poll row's first columns are the agent's; the rest are one entry's (or NULLs)."""


def poll_rows(session: Session, wanted: dict[uuid.UUID, int], batch: int) -> Sequence[Row[Any]]:
    """Each agent with its tenant's and site's settings, outer-joined to the entries (and
    their commands) in its window after `wanted[agent]`, at most `batch` each, in one
    statement ordered by agent and sequence."""
    stmt = (
        select(
            Agent.id,
            Agent.tenant_id,
            Agent.last_seq,
            Agent.revoked_at,
            Agent.max_flow,
            Agent.modules,
            Tenant.flow_mode,
            Tenant.plan,
            Site.max_flow,
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
        .select_from(Agent)
        .join(Tenant, Tenant.id == Agent.tenant_id)
        .join(Site, Site.id == Agent.site_id)
    )
    stmt = outerjoin_windows(
        session, stmt, Agent.id, AgentEntry, AgentEntry.agent_id, AgentEntry.seq, wanted, batch
    ).outerjoin(Command, Command.id == AgentEntry.command_id)
    return session.execute(stmt.order_by(Agent.id, AgentEntry.seq)).all()


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


def ack_callers(session: Session, agent_ids: list[uuid.UUID]) -> Sequence[Row[Any]]:
    """id, tenant_id, revoked_at, last_seq, acked_seq of each agent named."""
    return session.execute(
        select(Agent.id, Agent.tenant_id, Agent.revoked_at, Agent.last_seq, Agent.acked_seq).where(
            Agent.id.in_(agent_ids)
        )
    ).all()


def entry_commands(
    session: Session, entries: list[tuple[uuid.UUID, int]]
) -> list[tuple[uuid.UUID, int, uuid.UUID]]:
    """(agent, seq, command) of the entries named that carry a command."""
    rows = session.execute(
        select(AgentEntry.agent_id, AgentEntry.seq, AgentEntry.command_id).where(
            # One expanding parameter, so the statement compiles once for every batch
            # (an OR of one clause per agent was compiled anew each time).
            tuple_(AgentEntry.agent_id, AgentEntry.seq).in_(entries),
            AgentEntry.command_id.is_not(None),
        )
    ).all()
    return [(a, seq, c) for a, seq, c in rows]


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
