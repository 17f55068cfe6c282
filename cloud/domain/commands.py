"""Commands: one imperative instruction to one agent, carried in its sequence.

States: queued -> sent (handed out by a poll) -> acked -> running -> succeeded | failed,
or rejected by the agent. A command never handed out before `expires_at` becomes `expired`
and is never handed out after; one handed out that brings no result within `timeout_s`
becomes `timed_out`. An idempotency key makes an issuer's retry return the first command.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dockyard.cloud.store.db import Rows, claim_and_insert, insert_together
from dockyard.cloud.store.models import Agent, Command, Job
from dockyard.cloud.store.tenancy import unscoped

from . import agents, audit, live, sequence, states, text
from .clock import Clock
from .context import Ctx
from .errors import Invalid, NotFound, Revoked
from .pages import Page, PageRequest, keyset
from .permissions import Permission as P
from .states import CommandState as C
from .states import JobState as J

NAME = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_.\-]{0,40}\Z")
OPEN_STATES = tuple(states.COMMAND_OPEN)
FINAL_STATES = tuple(states.COMMAND_FINAL)
MAX_TTL = timedelta(days=7)
_LAPSE = states.moves((C.QUEUED, C.EXPIRED))
MAX_ARGS_BYTES = 64 * 1024
MAX_AGENTS_PER_ISSUE = 1000


def issue(
    ctx: Ctx,
    agent_id: uuid.UUID,
    name: str,
    args: dict[str, Any],
    *,
    ttl: timedelta = timedelta(hours=1),
    timeout: timedelta = timedelta(hours=1),
    idempotency_key: str | None = None,
) -> Command:
    command_id = uuid.uuid4()
    if idempotency_key is None:
        # The agent's number claimed in the statement that writes the command, its job, its
        # entry and the audit record (`claim_and_insert`); the agent is checked after, and a
        # refusal rolls it all back.
        _check_input(name, args, ttl, timeout)
        record = audit.records(ctx, "command.issue", [(None, str(command_id), {"name": name})])
        rows = _rows(ctx, [agent_id], [None], [None], name, args, ttl, timeout, None)
        tables = [_from_claim(t) for t in [*rows.tables([command_id]), record]]
        claimed = claim_and_insert(ctx.session, agent_id, tables)
        if claimed is None:
            raise NotFound("agent")
        _check_targets(ctx, [claimed])
        [command] = rows.commands([command_id], [claimed.tenant_id], [claimed.last_seq])
        _announce(ctx, [command])
        return command
    target = agents.get(ctx, agent_id)
    _check(ctx, [target], name, args, ttl, timeout)
    earlier = _issued_before(ctx, target, idempotency_key, name, args)
    if earlier is not None:
        return earlier
    seq = sequence.allocate(ctx.session, agent_id)
    record = audit.records(
        ctx, "command.issue", [(target.tenant_id, str(command_id), {"name": name})]
    )
    rows = _rows(
        ctx, [agent_id], [target.tenant_id], [seq], name, args, ttl, timeout, idempotency_key
    )
    [command] = _insert(ctx, rows, [command_id], record)
    return command


def _issued_before(
    ctx: Ctx, agent: _Target, key: str, name: str, args: dict[str, Any]
) -> Command | None:
    """The command issued earlier under this idempotency key, if it is the same one."""
    if not 1 <= len(text.plain("idempotency key", key)) <= 128:
        raise Invalid("an idempotency key has 1 to 128 characters")
    earlier = ctx.session.scalar(
        select(Command).where(Command.tenant_id == agent.tenant_id, Command.idempotency_key == key)
    )
    if earlier is not None and (
        earlier.agent_id != agent.id or earlier.name != name or earlier.args != args
    ):
        raise Invalid("this idempotency key was used for a different command")
    return earlier


def issue_many(
    ctx: Ctx,
    agent_ids: list[uuid.UUID],
    name: str,
    args: dict[str, Any],
    *,
    ttl: timedelta = timedelta(hours=1),
    timeout: timedelta = timedelta(hours=1),
) -> list[Command]:
    """One command to each of many agents, in one transaction: all are issued or none."""
    if not 1 <= len(agent_ids) <= MAX_AGENTS_PER_ISSUE:
        raise Invalid(f"a command goes to between 1 and {MAX_AGENTS_PER_ISSUE} agents at once")
    if len(set(agent_ids)) != len(agent_ids):
        raise Invalid("an agent is named twice")
    found = {
        row.id: row
        for row in ctx.session.execute(
            select(Agent.id, Agent.tenant_id, Agent.revoked_at).where(Agent.id.in_(agent_ids))
        )
    }
    if len(found) != len(agent_ids):
        raise NotFound("agent")
    targets = [found[i] for i in agent_ids]
    _check(ctx, targets, name, args, ttl, timeout)
    numbers = sequence.allocate_many(ctx.session, agent_ids)
    counts = Counter(a.tenant_id for a in targets)
    record = audit.records(
        ctx,
        "command.issue_many",
        [(t, None, {"name": name, "agents": counts[t]}) for t in sorted(counts)],
    )
    tenant_ids, seqs = [a.tenant_id for a in targets], [numbers[a] for a in agent_ids]
    rows = _rows(ctx, agent_ids, tenant_ids, seqs, name, args, ttl, timeout, None)
    return _insert(ctx, rows, [uuid.uuid4() for _ in agent_ids], record)


def _announce(ctx: Ctx, made: Sequence[Command]) -> None:
    """New jobs for the portal's live view: Core statements wrote them, which the session's
    flush (where `live.noticed` looks) never sees, so they are named at the commit here."""
    live.announce(ctx.session, {live.Change(live.Kind.JOB, c.tenant_id, c.job_id) for c in made})


def _insert(ctx: Ctx, rows: _Rows, command_ids: list[uuid.UUID], record: Rows) -> list[Command]:
    """A job, a command and a sequence entry for each agent, and the audit `record`,
    written together (`insert_together`: one statement on PostgreSQL) rather than
    through the unit of work, which spent most of a 200-agent issue building and flushing
    600 objects one by one. The commands returned are built from the same values and are
    not part of the session."""
    insert_together(ctx.session, [*rows.tables(command_ids), record])
    made = rows.commands(command_ids)
    _announce(ctx, made)
    return made


@dataclass
class _Rows:
    """What an issue writes for each agent, a job, a command and a sequence entry, once
    its commands' ids are given; and the commands, built from the same values. A tenant
    or a number left None is the claimed agent's (`_from_claim`)."""

    ctx: Ctx
    agent_ids: list[uuid.UUID]
    tenant_ids: list[Any]
    seqs: list[Any]
    command: dict[str, Any]
    job_ids: list[uuid.UUID]

    def tables(self, command_ids: list[uuid.UUID]) -> list[Rows]:
        now, agent_ids, tenant_ids = self.command["issued_at"], self.agent_ids, self.tenant_ids
        entries = sequence.command_entries(
            self.ctx.session, agent_ids, tenant_ids, self.seqs, command_ids, now
        )
        return [
            Rows(
                Job,
                {"id": self.job_ids, "tenant_id": tenant_ids, "agent_id": agent_ids}
                | {"command_id": command_ids},
                {"kind": self.command["name"], "state": J.PENDING}
                | {"created_at": now, "updated_at": now},
            ),
            Rows(
                Command,
                {"id": command_ids, "tenant_id": tenant_ids, "agent_id": agent_ids}
                | {"job_id": self.job_ids, "seq": self.seqs},
                self.command,
            ),
            entries,
        ]

    def commands(
        self,
        command_ids: list[uuid.UUID],
        tenant_ids: list[uuid.UUID] | None = None,
        seqs: list[int] | None = None,
    ) -> list[Command]:
        columns = zip(
            command_ids,
            tenant_ids or self.tenant_ids,
            self.agent_ids,
            self.job_ids,
            seqs or self.seqs,
            strict=True,
        )
        return [
            Command(id=c, tenant_id=t, agent_id=a, job_id=j, seq=q, **self.command)
            for c, t, a, j, q in columns
        ]


def _rows(
    ctx: Ctx,
    agent_ids: list[uuid.UUID],
    tenant_ids: list[Any],
    seqs: list[Any],
    name: str,
    args: dict[str, Any],
    ttl: timedelta,
    timeout: timedelta,
    idempotency_key: str | None,
) -> _Rows:
    now = ctx.now()
    expires_at, timeout_s = now + ttl, int(timeout.total_seconds())
    command: dict[str, Any] = {"name": name, "args": args, "state": C.QUEUED}
    command |= {"idempotency_key": idempotency_key}
    command |= {"issued_by": ctx.principal.id, "issued_at": now, "expires_at": expires_at}
    command |= {"timeout_s": timeout_s}
    return _Rows(ctx, agent_ids, tenant_ids, seqs, command, [uuid.uuid4() for _ in agent_ids])


def _from_claim(rows: Rows) -> Rows:
    """Rows of one agent's issue whose tenant (and sequence number, where they have one)
    are the claimed agent's."""
    seq = {"seq": "last_seq"} if "seq" in rows.varying else {}
    return rows.claiming(tenant_id="tenant_id", **seq)


class _Target(Protocol):
    """What issuing reads of an agent: an ORM row or a row of just these columns."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def tenant_id(self) -> uuid.UUID: ...
    @property
    def revoked_at(self) -> datetime | None: ...


def _check(
    ctx: Ctx,
    targets: Sequence[_Target],
    name: str,
    args: dict[str, Any],
    ttl: timedelta,
    timeout: timedelta,
) -> None:
    _check_targets(ctx, targets)
    _check_input(name, args, ttl, timeout)


def _check_targets(ctx: Ctx, targets: Sequence[_Target]) -> None:
    for agent in targets:
        ctx.principal.require(agent.tenant_id, P.COMMAND_ISSUE, "agent")
        if agent.revoked_at is not None:
            raise Revoked("this agent was revoked; it takes no more commands")


def _check_input(name: str, args: dict[str, Any], ttl: timedelta, timeout: timedelta) -> None:
    if not NAME.match(name):
        raise Invalid("a command is named module.action, e.g. 'noop.append'")
    if not timedelta(seconds=1) <= ttl <= MAX_TTL:
        raise Invalid("a command's time-to-live is between 1 second and 7 days")
    if not timedelta(seconds=1) <= timeout <= MAX_TTL:
        raise Invalid("a command's timeout is between 1 second and 7 days")
    if len(repr(args)) > MAX_ARGS_BYTES:
        raise Invalid("a command's arguments take at most 64 KiB")


def get(ctx: Ctx, command_id: uuid.UUID) -> Command:
    command = ctx.session.get(Command, command_id)
    if command is None:
        raise NotFound("command")
    ctx.principal.require(command.tenant_id, P.COMMAND_READ, "command")
    return command


def sweep(session: Session, clock: Clock) -> tuple[int, int]:
    """Mark lapsed commands `expired` and overdue ones `timed_out`, across all tenants."""
    now = clock.now()
    with unscoped(session, "the sweeper closes lapsed commands of every tenant"):
        expired = session.execute(
            update(Command)
            .where(Command.state == C.QUEUED, Command.expires_at <= now)
            .values(state=_LAPSE[0][1], finished_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
        overdue = list(
            session.scalars(
                select(Command).where(Command.state.in_(OPEN_STATES), Command.result_due_at <= now)
            )
        )
        for command in overdue:
            command.state = states.move(command.state, C.TIMED_OUT)
            command.finished_at = now
            job = session.get(Job, command.job_id)
            if job is not None and job.state not in states.JOB_FINAL:
                job.state = states.move(job.state, J.TIMED_OUT)
                job.updated_at = now
        session.flush()  # inside the unscoped block: these rows span tenants
    return int(expired or 0), len(overdue)


# --- reads for the transports ---------------------------------------------------------------


def listing(
    ctx: Ctx, agent_id: uuid.UUID, request: PageRequest, *, state: str | None = None
) -> Page[Command]:
    """One agent's commands, oldest first, optionally in one state."""
    agent = agents.get(ctx, agent_id)
    stmt = select(Command).where(Command.agent_id == agent.id)
    if state is not None:
        stmt = stmt.where(Command.state == state)
    return keyset(ctx.session, stmt, Command.issued_at, request)
