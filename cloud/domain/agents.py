"""Agents: who they are, their keys and assertions, and what flow mode applies to them.
What they are delivered is `delivery.py`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dockyard.agent.protocol import (
    FlowMode,
    narrowest,
)
from dockyard.cloud.store.models import Agent, Site, Tenant, UsedAssertion
from dockyard.cloud.store.tenancy import unscoped

from . import audit, features
from .context import Ctx
from .errors import Conflict, NotFound, Unauthenticated
from .pages import Page, PageRequest, keyset
from .permissions import Permission as P
from .sequence import wake


@dataclass(frozen=True)
class AgentIdentity:
    """What the token endpoint needs to check an assertion; read before the tenant is known."""

    agent_id: uuid.UUID
    tenant_id: uuid.UUID
    public_key: str
    revoked: bool


def identity(session: Session, agent_id: uuid.UUID) -> AgentIdentity | None:
    with unscoped(session, "an agent proves who it is before its tenant is known"):
        agent = session.get(Agent, agent_id)
        if agent is None:
            return None
        return AgentIdentity(
            agent.id, agent.tenant_id, agent.public_key, agent.revoked_at is not None
        )


def remember_assertion(
    ctx: Ctx, agent_id: uuid.UUID, tenant_id: uuid.UUID, jti: str, exp: datetime
) -> None:
    """Refuse an assertion whose `jti` was seen before (while it could still be valid)."""
    ctx.session.execute(delete(UsedAssertion).where(UsedAssertion.expires_at < ctx.now()))
    try:
        with ctx.session.begin_nested():
            ctx.session.add(
                UsedAssertion(
                    tenant_id=tenant_id, jti=f"{agent_id}:{jti}", agent_id=agent_id, expires_at=exp
                )
            )
    except IntegrityError:
        raise Unauthenticated("this client assertion was used before (jti replay)") from None


def get(ctx: Ctx, agent_id: uuid.UUID) -> Agent:
    agent = ctx.session.get(Agent, agent_id)
    if agent is None:
        raise NotFound("agent")
    ctx.principal.require(agent.tenant_id, P.AGENT_READ, "agent")
    return agent


def active(ctx: Ctx, agent_id: uuid.UUID) -> Agent:
    """The calling agent itself, refused once revoked."""
    agent = ctx.session.get(Agent, agent_id)
    if agent is None or agent.revoked_at is not None:
        raise Unauthenticated("this agent was revoked; enrol it again")
    return agent


def flow_mode(session: Session, agent: Agent) -> FlowMode:
    """The tenant's mode, narrowed by the site and by the agent's own ceiling."""
    tenant = session.get(Tenant, agent.tenant_id)
    site = session.get(Site, agent.site_id)
    assert tenant is not None
    assert site is not None
    return narrowest_mode(tenant.flow_mode, site.max_flow, agent.max_flow)


def narrowest_mode(tenant_flow: str, site_flow: str | None, agent_flow: str) -> FlowMode:
    site = FlowMode(site_flow) if site_flow else None
    return narrowest(FlowMode(tenant_flow), site, FlowMode(agent_flow))


def settings_of(
    tenant_flow: str, plan: str, site_flow: str | None, agent_flow: str, modules: list[Any]
) -> tuple[FlowMode, dict[str, list[str]]]:
    """An agent's flow mode and unlocked features, from its tenant's, site's and own columns
    (the columns a poll reads, so a batch of polls needs no rows)."""
    mode = narrowest_mode(tenant_flow, site_flow, agent_flow)
    return mode, features.unlocked(plan, mode, [m["name"] for m in modules])


def revoke(ctx: Ctx, agent_id: uuid.UUID) -> Agent:
    agent = get(ctx, agent_id)
    ctx.principal.require(agent.tenant_id, P.AGENT_REVOKE, "agent")
    if agent.revoked_at is None:
        agent.revoked_at = ctx.now()
        audit.record(ctx, agent.tenant_id, "agent.revoke", target=str(agent_id))
        wake(ctx.session, agent_id)
    return agent


def rotate_key(ctx: Ctx, agent_id: uuid.UUID, public_key: str) -> Agent:
    agent = active(ctx, agent_id)
    if public_key == agent.public_key:
        raise Conflict("the new key is the current key")
    agent.public_key = public_key
    agent.key_rotated_at = ctx.now()
    audit.record(ctx, agent.tenant_id, "agent.rotate_key", target=str(agent_id))
    return agent


def record_seen(
    session: Session, seen: dict[uuid.UUID, datetime], skews: dict[uuid.UUID, int] | None = None
) -> set[uuid.UUID]:
    """Store when agents last polled, for many agents in one executemany; returns the
    agents skipped because another transaction holds their row.

    Polls answered from memory (see the bus) never open a transaction, so the process
    gathers the times and writes them every sweep; Core, not the ORM, keeps the cost per
    row small enough not to stall the event loop's thread for thousands of agents. Rows
    another transaction holds (a command being issued to that agent) are skipped, not
    waited for: a last-seen time must never delay a delivery, and the caller keeps the
    skipped ones for its next sweep. An agent that no longer exists is simply dropped.
    `skews`: the clock skew agents reported with those polls (an agent that reported none
    keeps its last one)."""
    if not seen:
        return set()
    table = cast(Table, Agent.__table__)
    with unscoped(session, "last-seen times of agents whose access tokens this process checked"):
        conn = session.connection()
        free = set(
            conn.execute(
                select(table.c.id)
                .where(table.c.id.in_(sorted(seen)))
                .with_for_update(skip_locked=True)
            ).scalars()
        )
        skews = skews or {}
        rows = [
            {"agent_id": agent_id, "at": at, "skew": skews.get(agent_id)}
            for agent_id, at in seen.items()
            if agent_id in free
        ]
        if rows:
            stmt = (
                update(table)
                .where(table.c.id == bindparam("agent_id"))
                .values(
                    last_seen_at=bindparam("at"),
                    clock_skew_s=func.coalesce(bindparam("skew"), table.c.clock_skew_s),
                )
            )
            conn.execute(stmt, rows)
        rest = seen.keys() - free
        if not rest:
            return set()
        return set(conn.execute(select(table.c.id).where(table.c.id.in_(rest))).scalars())


# --- reads for the transports ---------------------------------------------------------------


def listing(
    ctx: Ctx, tenant_id: uuid.UUID, request: PageRequest, *, include_revoked: bool = False
) -> Page[Agent]:
    """The tenant's agents, oldest enrolment first; revoked ones only when asked."""
    ctx.principal.require(tenant_id, P.AGENT_READ)
    stmt = select(Agent).where(Agent.tenant_id == tenant_id)
    if not include_revoked:
        stmt = stmt.where(Agent.revoked_at.is_(None))
    return keyset(ctx.session, stmt, Agent.enrolled_at, request)
