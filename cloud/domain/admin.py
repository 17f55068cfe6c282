"""An operator's acts from the command line: top-level tenants, users, API tokens.

None of these is reachable from GraphQL: they create the first principals, so they run
without one and cross tenants on purpose.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, bindparam, or_, select, update
from sqlalchemy.orm import Session, aliased

from dockyard.agent.protocol import FlowMode
from dockyard.cloud.store.models import ApiToken, Membership, Tenant, User
from dockyard.cloud.store.tenancy import unscoped

from .clock import Clock
from .errors import Invalid
from .principal import Principal, Role
from .secrets import hash_secret, new_secret
from .tenants import GrantRow, check_plan, grant_columns, principal_from


def ensure_tenant(
    session: Session,
    clock: Clock,
    name: str,
    *,
    kind: str,
    flow_mode: FlowMode,
    plan: str,
    parent_id: uuid.UUID | None = None,
) -> Tenant:
    """The tenant of that name under that parent, created if missing."""
    check_plan(plan)
    if kind not in ("msp", "customer"):
        raise Invalid("a tenant is an 'msp' or a 'customer'")
    with unscoped(session, "an operator creates tenants from the command line"):
        found = session.scalar(
            select(Tenant).where(Tenant.name == name, Tenant.parent_id == parent_id)
        )
        if found is not None:
            return found
        tenant = Tenant(
            name=name,
            kind=kind,
            parent_id=parent_id,
            flow_mode=flow_mode.value,
            plan=plan,
            created_at=clock.now(),
        )
        session.add(tenant)
        session.flush()
        return tenant


def ensure_user(session: Session, clock: Clock, email: str, name: str) -> User:
    email = email.strip().lower()
    if "@" not in email:
        raise Invalid("a user is named by an e-mail address")
    found = session.scalar(select(User).where(User.email == email))
    if found is not None:
        return found
    user = User(email=email, name=name, created_at=clock.now())
    session.add(user)
    session.flush()
    return user


def ensure_membership(
    session: Session, clock: Clock, tenant_id: uuid.UUID, user_id: uuid.UUID, role: Role
) -> Membership:
    with unscoped(session, "an operator grants a membership from the command line"):
        found = session.scalar(
            select(Membership).where(
                Membership.tenant_id == tenant_id, Membership.user_id == user_id
            )
        )
        if found is not None:
            found.role = role.value
            return found
        membership = Membership(
            tenant_id=tenant_id, user_id=user_id, role=role.value, created_at=clock.now()
        )
        session.add(membership)
        session.flush()
        return membership


def issue_api_token(
    session: Session,
    clock: Clock,
    user_id: uuid.UUID,
    name: str,
    *,
    expires_at: datetime | None = None,
) -> str:
    """A new bearer token for a user; the secret is returned once and kept only hashed."""
    secret = new_secret("dy_pat")
    session.add(
        ApiToken(
            user_id=user_id,
            token_hash=hash_secret(secret),
            name=name,
            created_at=clock.now(),
            expires_at=expires_at,
        )
    )
    session.flush()
    return secret


USE_GRANULARITY = timedelta(minutes=1)
"""How stale a token's `last_used_at` may get: it is written when older than this, so a
script's burst of requests costs one write, not one per request."""


def _token_grants() -> Select[Any]:
    """The token by its hash, unless revoked or expired at `now`, with its user's grants."""
    parent, child = aliased(Tenant), aliased(Tenant)
    return (
        select(ApiToken.id, ApiToken.tenant_id, ApiToken.last_used_at, ApiToken.user_id)
        .add_columns(*grant_columns(parent, child))
        .outerjoin(Membership, Membership.user_id == ApiToken.user_id)
        .outerjoin(parent, parent.id == Membership.tenant_id)
        .outerjoin(child, child.parent_id == Membership.tenant_id)
        .where(
            ApiToken.token_hash == bindparam("token_hash"),
            ApiToken.revoked_at.is_(None),
            or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > bindparam("now")),
        )
    )


# Built once: constructing it (aliases, joins, its cache key) cost a fifth of resolving a
# token, which every GraphQL request does (bench/poll_latency.py, py-spy).
_TOKEN_GRANTS = _token_grants()


def principal_for_api_token(session: Session, clock: Clock, secret: str) -> Principal | None:
    """The principal a bearer token stands for, or None for an unknown, revoked or expired
    one. The token, its user's memberships and the children of those tenants come in one
    statement (a row per membership and child): this runs before every GraphQL request. A
    token limited to a tenant (made in the portal) keeps only its user's grants there."""
    now = clock.now()
    with unscoped(session, "a token's user's own memberships across tenants"):
        rows = session.execute(_TOKEN_GRANTS, {"token_hash": hash_secret(secret), "now": now}).all()
        if not rows:
            return None
        token_id, limit, last_used, user_id = rows[0][:4]
        if last_used is None or now - last_used >= USE_GRANULARITY:
            session.execute(
                update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now)
            )
    grants = [GrantRow(*r[4:]) for r in rows]
    principal = principal_from(user_id, grants)
    return principal if limit is None else limited(principal, grants, limit)


def limited(principal: Principal, grants: list[GrantRow], tenant_id: uuid.UUID) -> Principal:
    """The principal's grants in one tenant only: a direct membership of it (which, for an
    MSP, also grants in its children) and an MSP's grant in it."""
    children = {g.child_id for g in grants if g.tenant_id == tenant_id and g.child_id}
    direct = {t: r for t, r in principal.direct.items() if t == tenant_id}
    via_msp = {t: r for t, r in principal.via_msp.items() if t == tenant_id or t in children}
    seen = frozenset(direct) | frozenset(via_msp)
    return Principal(principal.kind, principal.id, direct, via_msp, principal.archived & seen)
