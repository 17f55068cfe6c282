"""Each agent's one ordered sequence of entries: commands and policy changes.

The sequence number comes from `agents.last_seq`, bumped by one UPDATE ... RETURNING, so two
writers for one agent serialise on that row and numbers never repeat or skip. Appending also
asks for the agent's held poll to be woken when the transaction commits.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Row, update
from sqlalchemy.orm import Session

from dockyard.cloud.store.db import CLAIM, Rows, wake_agent
from dockyard.cloud.store.models import Agent, AgentEntry

from .context import Ctx
from .errors import NotFound


def allocate(session: Session, agent_id: uuid.UUID) -> int:
    return int(claim(session, agent_id).last_seq)


def claim(session: Session, agent_id: uuid.UUID) -> Row[tuple[uuid.UUID, uuid.UUID, Any, int]]:
    """The agent's next number, with what a caller checks before using it (its tenant, its
    revocation), in one statement. A caller that then refuses rolls the number back with
    its transaction. (Issuing a command claims it in the statement that writes the
    command: `commands.issue`.)"""
    row = session.execute(CLAIM, {"claimed_agent": agent_id}).one_or_none()
    if row is None:
        raise NotFound("agent")
    return row


def allocate_many(session: Session, agent_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """One new number for each of several distinct agents, in one statement."""
    rows = session.execute(
        update(Agent)
        .where(Agent.id.in_(agent_ids))
        .values(last_seq=Agent.last_seq + 1)
        .returning(Agent.id, Agent.last_seq)
    ).all()
    numbers = {row[0]: int(row[1]) for row in rows}
    if len(numbers) != len(set(agent_ids)):
        raise NotFound("agent")
    return numbers


def append(
    ctx: Ctx,
    agent_id: uuid.UUID,
    tenant_id: uuid.UUID,
    kind: str,
    payload: dict[str, Any],
) -> AgentEntry:
    """Append an entry that is not a command (commands go in with `command_entries`)."""
    entry = AgentEntry(
        tenant_id=tenant_id,
        agent_id=agent_id,
        seq=allocate(ctx.session, agent_id),
        kind=kind,
        payload=payload,
        created_at=ctx.now(),
    )
    ctx.session.add(entry)
    wake(ctx.session, agent_id)
    return entry


def command_entries(
    session: Session,
    agent_ids: list[uuid.UUID],
    tenant_ids: list[uuid.UUID],
    seqs: list[int],
    command_ids: list[uuid.UUID],
    now: datetime,
) -> Rows:
    """The sequence entries of commands, for `insert_together` with the commands
    themselves (the numbers taken with `allocate` or `allocate_many`); each agent is
    woken once the transaction commits."""
    for agent_id in agent_ids:
        wake(session, agent_id)
    return Rows(
        AgentEntry,
        {"id": [uuid.uuid4() for _ in agent_ids], "tenant_id": tenant_ids}
        | {"agent_id": agent_ids, "seq": seqs, "command_id": command_ids},
        {"kind": "command", "payload": {}, "created_at": now},
    )


def wake(session: Session, agent_id: uuid.UUID) -> None:
    wake_agent(session, agent_id)
