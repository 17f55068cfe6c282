"""An operator's acts from the command line: top-level tenants, users, API tokens.

None of these is reachable from GraphQL: they create the first principals, so they run
without one and cross tenants on purpose.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
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


def issue_api_token(session: Session, clock: Clock, user_id: uuid.UUID, name: str) -> str:
    """A new bearer token for a user; the secret is returned once and kept only hashed."""
    secret = new_secret("dy_pat")
    session.add(
        ApiToken(user_id=user_id, token_hash=hash_secret(secret), name=name, created_at=clock.now())
    )
    session.flush()
    return secret


def principal_for_api_token(session: Session, secret: str) -> Principal | None:
    """The principal a bearer token stands for, or None for an unknown or revoked one.
    The token, its user's memberships and the children of those tenants come in one
    statement (a row per membership and child): this runs before every GraphQL request."""
    parent, child = aliased(Tenant), aliased(Tenant)
    with unscoped(session, "a token's user's own memberships across tenants"):
        rows = session.execute(
            select(ApiToken.user_id, *grant_columns(parent, child))
            .outerjoin(Membership, Membership.user_id == ApiToken.user_id)
            .outerjoin(parent, parent.id == Membership.tenant_id)
            .outerjoin(child, child.parent_id == Membership.tenant_id)
            .where(ApiToken.token_hash == hash_secret(secret), ApiToken.revoked_at.is_(None))
        ).all()
    if not rows:
        return None
    return principal_from(rows[0][0], [GrantRow(*r[1:]) for r in rows])
