"""Enrolment tokens and the enrolment of an agent.

A token is single-use, expiring and bound to a tenant, a site and a ceiling on the flow
mode. It is consumed by one conditional UPDATE, so of two agents racing with one token
exactly one wins. Host facts are claims: an agent claiming a machine the tenant already
knows becomes a new agent marked as a possible duplicate, never the old agent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import or_, select, update

from dockyard.agent.protocol import EnrollRequest, FlowMode, narrowest
from dockyard.cloud.store.models import Agent, EnrolmentToken, Site
from dockyard.cloud.store.tenancy import scope_session, unscoped

from . import audit, text
from .context import Ctx
from .errors import Invalid, NotFound, Unauthenticated
from .pages import Page, PageRequest, keyset
from .permissions import Permission as P
from .principal import Principal
from .secrets import hash_secret, new_secret

MAX_TOKEN_TTL = timedelta(days=30)


@dataclass(frozen=True)
class NewToken:
    token: EnrolmentToken
    secret: str


def create_token(
    ctx: Ctx, site_id: uuid.UUID, max_flow: FlowMode, ttl: timedelta, note: str = ""
) -> NewToken:
    site = ctx.session.get(Site, site_id)
    if site is None:
        raise NotFound("site")
    ctx.principal.require(site.tenant_id, P.ENROLMENT_WRITE, "site")
    if not timedelta(minutes=1) <= ttl <= MAX_TOKEN_TTL:
        raise Invalid("an enrolment token lives between 1 minute and 30 days")
    if len(text.plain("note", note)) > 200:
        raise Invalid("a note has at most 200 characters")
    secret = new_secret("dy_enr")
    token = EnrolmentToken(
        tenant_id=site.tenant_id,
        site_id=site_id,
        token_hash=hash_secret(secret),
        max_flow=max_flow.value,
        note=note,
        created_by=ctx.principal.id,
        created_at=ctx.now(),
        expires_at=ctx.now() + ttl,
    )
    ctx.session.add(token)
    ctx.session.flush()
    audit.record(ctx, site.tenant_id, "enrolment_token.create", target=str(token.id))
    return NewToken(token, secret)


def revoke_token(ctx: Ctx, token_id: uuid.UUID) -> EnrolmentToken:
    token = ctx.session.get(EnrolmentToken, token_id)
    if token is None:
        raise NotFound("enrolment token")
    ctx.principal.require(token.tenant_id, P.ENROLMENT_WRITE, "enrolment token")
    if token.revoked_at is None:
        token.revoked_at = ctx.now()
        audit.record(ctx, token.tenant_id, "enrolment_token.revoke", target=str(token_id))
    return token


def enroll(ctx: Ctx, request: EnrollRequest) -> Agent:
    """Consume the token and create the agent. `ctx` carries an unscoped session; once the
    token names the tenant, the session is scoped to it."""
    session = ctx.session
    now = ctx.now()
    digest = hash_secret(request.token)
    with unscoped(session, "an enrolling agent is known only by its token's hash"):
        token = session.scalar(select(EnrolmentToken).where(EnrolmentToken.token_hash == digest))
        if token is None:
            raise Unauthenticated("unknown enrolment token")
        agent_id = uuid.uuid4()
        won = session.execute(
            update(EnrolmentToken)
            .where(
                EnrolmentToken.id == token.id,
                EnrolmentToken.used_at.is_(None),
                EnrolmentToken.revoked_at.is_(None),
                EnrolmentToken.expires_at > now,
            )
            .values(used_at=now, used_by_agent_id=agent_id)
            .execution_options(synchronize_session=False)
        )
        if won.rowcount != 1:  # type: ignore[attr-defined]
            raise Unauthenticated("this enrolment token was used, revoked or has expired")
        tenant_id, site_id, token_flow = token.tenant_id, token.site_id, token.max_flow
    scope_session(session, [tenant_id])
    ctx.principal = Principal.agent(agent_id, tenant_id)

    facts = request.host
    conditions = []
    if facts.machine_id:
        conditions.append(Agent.host_facts["machine_id"].as_string() == facts.machine_id)
    if facts.bios_uuid:
        conditions.append(Agent.host_facts["bios_uuid"].as_string() == facts.bios_uuid)
    duplicates: list[uuid.UUID] = []
    if conditions:
        same = select(Agent.id).where(Agent.revoked_at.is_(None), or_(*conditions))
        duplicates = list(session.scalars(same))
    max_flow = narrowest(FlowMode(token_flow), request.max_flow)
    agent = Agent(
        id=agent_id,
        tenant_id=tenant_id,
        site_id=site_id,
        name=request.name or facts.hostname or str(agent_id),
        public_key=request.public_key,
        host_facts=facts.model_dump(),
        modules=[m.model_dump() for m in request.modules],
        max_flow=max_flow.value,
        last_seq=0,
        acked_seq=0,
        possible_duplicate_of=[str(d) for d in duplicates],
        enrolled_at=now,
    )
    session.add(agent)
    session.flush()
    audit.record(
        ctx,
        tenant_id,
        "agent.enroll",
        target=str(agent_id),
        possible_duplicate_of=[str(d) for d in duplicates],
        standalone_summary=dict(request.standalone_summary),
    )
    return agent


# --- reads for the transports ---------------------------------------------------------------


def tokens(ctx: Ctx, tenant_id: uuid.UUID, request: PageRequest) -> Page[EnrolmentToken]:
    """The tenant's enrolment tokens (hashes never leave the domain), oldest first."""
    ctx.principal.require(tenant_id, P.ENROLMENT_READ)
    stmt = select(EnrolmentToken).where(EnrolmentToken.tenant_id == tenant_id)
    return keyset(ctx.session, stmt, EnrolmentToken.created_at, request)
