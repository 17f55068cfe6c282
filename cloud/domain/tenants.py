"""Tenants, their MSP parents, members, sites, plans and flow modes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import select, update
from sqlalchemy.orm import Session, aliased

from dockyard.agent.protocol import FlowMode
from dockyard.cloud.store.models import Agent, EnrolmentToken, Membership, Site, Tenant, User
from dockyard.cloud.store.tenancy import admit_new_child, session_scope, unscoped

from . import audit, features, text
from .context import Ctx
from .errors import Conflict, Invalid, NotFound
from .pages import Page, PageRequest, keyset
from .permissions import Permission as P
from .principal import Principal, Role
from .sequence import wake


class GrantRow(NamedTuple):
    """One membership of a user joined to one child of its tenant (child None for a tenant
    without children; tenant None for a user without memberships)."""

    tenant_id: uuid.UUID | None
    role: str | None
    tenant_archived: datetime | None
    child_id: uuid.UUID | None
    child_archived: datetime | None


def grant_columns(parent: type[Tenant], child: type[Tenant]) -> tuple[Any, ...]:
    """The columns of a `GrantRow`, for a statement that joins memberships to their tenant
    (`parent`) and its children (`child`)."""
    return (Membership.tenant_id, Membership.role, parent.archived_at, child.id, child.archived_at)


def principal_for_user(session: Session, user_id: uuid.UUID) -> Principal:
    """Resolve a user's grants once, at the edge: direct memberships, then MSP children."""
    parent, child = aliased(Tenant), aliased(Tenant)
    with unscoped(session, "resolving a user's own memberships across tenants"):
        rows = session.execute(
            select(*grant_columns(parent, child))
            .join(parent, parent.id == Membership.tenant_id)
            .outerjoin(child, child.parent_id == Membership.tenant_id)
            .where(Membership.user_id == user_id)
        ).all()
    return principal_from(user_id, [GrantRow(*r) for r in rows])


def principal_from(user_id: uuid.UUID, rows: list[GrantRow]) -> Principal:
    """A user's principal from its grant rows. A membership of an MSP is a grant in each
    of its children, kept apart from any membership the user holds in the child itself."""
    direct: dict[uuid.UUID, Role] = {}
    via_msp: dict[uuid.UUID, Role] = {}
    archived: set[uuid.UUID] = set()
    for row in rows:
        if row.tenant_id is None or row.role is None:
            continue
        direct[row.tenant_id] = Role(row.role)
        if row.tenant_archived is not None:
            archived.add(row.tenant_id)
        if row.child_id is not None:
            via_msp[row.child_id] = Role(row.role)
            if row.child_archived is not None:
                archived.add(row.child_id)
    return Principal("user", user_id, direct, via_msp, frozenset(archived))


def create_child_tenant(
    ctx: Ctx, parent_id: uuid.UUID, name: str, flow_mode: FlowMode, plan: str
) -> Tenant:
    """A customer under an MSP, audited in both. The child joins the session's scope as it
    is made, so its own audit record is written in the same transaction."""
    ctx.principal.require(parent_id, P.TENANT_CHILD_CREATE)
    parent = get(ctx, parent_id)
    if parent.kind != "msp":
        raise Invalid("only an MSP tenant has child tenants")
    check_plan(plan)
    name = text.name("name", name)
    _check_sibling_name(ctx, parent_id, name, None)
    tenant = Tenant(
        id=uuid.uuid4(),
        parent_id=parent_id,
        name=name,
        kind="customer",
        flow_mode=flow_mode.value,
        plan=plan,
        created_at=ctx.now(),
    )
    ctx.session.add(tenant)
    admit_new_child(ctx.session, tenant)
    ctx.session.flush()  # the tenant's row first: its audit records refer to it
    _record_both(ctx, tenant, "tenant.create", name=name, flow_mode=flow_mode, plan=plan)
    return tenant


def rename(ctx: Ctx, tenant_id: uuid.UUID, name: str) -> Tenant:
    ctx.principal.require(tenant_id, P.TENANT_RENAME)
    tenant = get(ctx, tenant_id)
    name = text.name("name", name)
    old = tenant.name
    if name == old:
        return tenant
    if tenant.parent_id is not None:
        _check_sibling_name(ctx, tenant.parent_id, name, tenant.id)
    tenant.name = name
    _record_both(ctx, tenant, "tenant.rename", old=old, new=name)
    return tenant


def archive(ctx: Ctx, tenant_id: uuid.UUID) -> Tenant:
    """The MSP retires a child: its agents are revoked (their next request is refused),
    its unused enrolment tokens too, and it takes no more changes; its history stays."""
    ctx.principal.require(tenant_id, P.TENANT_ARCHIVE)
    tenant = get(ctx, tenant_id)
    if tenant.parent_id is None:
        raise Invalid("only a child tenant is archived")
    now = ctx.now()
    tenant.archived_at = now
    revoked = 0
    for agent in ctx.session.scalars(
        select(Agent).where(Agent.tenant_id == tenant_id, Agent.revoked_at.is_(None))
    ):
        agent.revoked_at = now
        wake(ctx.session, agent.id)
        revoked += 1
    ctx.session.execute(
        update(EnrolmentToken)
        .where(
            EnrolmentToken.tenant_id == tenant_id,
            EnrolmentToken.used_at.is_(None),
            EnrolmentToken.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    _record_both(ctx, tenant, "tenant.archive", agents_revoked=revoked)
    return tenant


def get(ctx: Ctx, tenant_id: uuid.UUID) -> Tenant:
    tenant = ctx.session.get(Tenant, tenant_id)
    if tenant is None or tenant_id not in ctx.principal.tenant_ids:
        raise NotFound("tenant")
    return tenant


def list_visible(ctx: Ctx, request: PageRequest) -> Page[Tenant]:
    """The tenants the principal sees (its own and, for an MSP's members, the children)."""
    return keyset(ctx.session, select(Tenant), Tenant.created_at, request)


def sites(ctx: Ctx, tenant_id: uuid.UUID, request: PageRequest) -> Page[Site]:
    ctx.principal.require(tenant_id, P.SITE_READ)
    return keyset(ctx.session, select(Site).where(Site.tenant_id == tenant_id), Site.name, request)


def current_user(ctx: Ctx) -> User:
    """The signed-in user behind the principal."""
    user = ctx.session.get(User, ctx.principal.id) if ctx.principal.id else None
    if user is None or ctx.principal.kind != "user":
        raise NotFound("user")
    return user


class Grant(NamedTuple):
    """One of the signed-in user's grants: a membership of `tenant_id` itself (`direct`),
    or one of `msp_id`, the tenant's MSP."""

    tenant_id: uuid.UUID
    role: Role
    direct: bool
    msp_id: uuid.UUID | None


def grants(ctx: Ctx) -> list[Grant]:
    """The principal's grants, direct ones first, each saying how it is held: a child
    where the user is also a member is listed once per grant, with its own role."""
    rows = ctx.session.execute(
        select(Tenant.id, Tenant.parent_id).where(Tenant.id.in_(list(ctx.principal.via_msp)))
    )
    parents = {tenant_id: parent_id for tenant_id, parent_id in rows}
    direct = [Grant(t, role, True, None) for t, role in sorted(ctx.principal.direct.items())]
    inherited = [
        Grant(t, role, False, parents.get(t)) for t, role in sorted(ctx.principal.via_msp.items())
    ]
    return direct + inherited


def set_flow_mode(ctx: Ctx, tenant_id: uuid.UUID, mode: FlowMode) -> Tenant:
    """Narrowing needs an admin (an MSP's admin will do); widening needs the tenant's own
    owner, so an MSP can never open a customer's data flow on its own."""
    tenant = get(ctx, tenant_id)
    old = FlowMode(tenant.flow_mode)
    widens = mode.rank > old.rank
    ctx.principal.require(tenant_id, P.TENANT_FLOW_WIDEN if widens else P.TENANT_FLOW_NARROW)
    tenant.flow_mode = mode.value
    _record_both(ctx, tenant, "tenant.flow_mode", old=old, new=mode)
    _wake_all_agents(ctx, tenant_id)
    return tenant


def set_plan(ctx: Ctx, tenant_id: uuid.UUID, plan: str) -> Tenant:
    ctx.principal.require(tenant_id, P.TENANT_PLAN)
    check_plan(plan)
    tenant = get(ctx, tenant_id)
    old = tenant.plan
    tenant.plan = plan
    audit.record(ctx, tenant_id, "tenant.plan", target=str(tenant_id), old=old, new=plan)
    _wake_all_agents(ctx, tenant_id)
    return tenant


def add_member(ctx: Ctx, tenant_id: uuid.UUID, user_id: uuid.UUID, role: Role) -> Membership:
    ctx.principal.require(tenant_id, P.MEMBER_ADD_OWNER if role is Role.OWNER else P.MEMBER_ADD)
    exists = ctx.session.scalar(
        select(Membership).where(Membership.tenant_id == tenant_id, Membership.user_id == user_id)
    )
    if exists is not None:
        raise Conflict("that user is already a member")
    membership = Membership(
        tenant_id=tenant_id, user_id=user_id, role=role.value, created_at=ctx.now()
    )
    ctx.session.add(membership)
    audit.record(ctx, tenant_id, "member.add", target=str(user_id), role=role)
    return membership


def create_site(ctx: Ctx, tenant_id: uuid.UUID, name: str, max_flow: FlowMode | None) -> Site:
    ctx.principal.require(tenant_id, P.SITE_WRITE)
    get(ctx, tenant_id)
    name = text.name("name", name)
    if ctx.session.scalar(select(Site).where(Site.tenant_id == tenant_id, Site.name == name)):
        raise Conflict(f"a site named {name!r} exists already")
    site = Site(
        tenant_id=tenant_id,
        name=name,
        max_flow=max_flow.value if max_flow else None,
        created_at=ctx.now(),
    )
    ctx.session.add(site)
    ctx.session.flush()
    audit.record(ctx, tenant_id, "site.create", target=str(site.id), name=name)
    return site


def set_site_flow(ctx: Ctx, site_id: uuid.UUID, max_flow: FlowMode | None) -> Site:
    site = ctx.session.get(Site, site_id)
    if site is None:
        raise NotFound("site")
    ctx.principal.require(site.tenant_id, P.SITE_WRITE, "site")
    site.max_flow = max_flow.value if max_flow else None
    audit.record(ctx, site.tenant_id, "site.flow_mode", target=str(site_id), new=max_flow)
    for agent_id in ctx.session.scalars(select(Agent.id).where(Agent.site_id == site_id)):
        wake(ctx.session, agent_id)
    return site


def _record_both(ctx: Ctx, tenant: Tenant, action: str, **detail: Any) -> None:
    """An act on a child tenant is audited in the child and, when the principal sees it,
    in its MSP (a customer's own admin does not see its MSP's log)."""
    audit.record(ctx, tenant.id, action, target=str(tenant.id), **detail)
    if tenant.parent_id is not None and tenant.parent_id in (session_scope(ctx.session) or ()):
        audit.record(ctx, tenant.parent_id, action, target=str(tenant.id), **detail)


def _check_sibling_name(
    ctx: Ctx, parent_id: uuid.UUID, name: str, tenant_id: uuid.UUID | None
) -> None:
    """Children of one MSP have distinct names (`ensure_tenant` finds them by name). A
    customer's own admin renaming it cannot see its siblings, hence the unscoped read."""
    stmt = select(Tenant.id).where(Tenant.parent_id == parent_id, Tenant.name == name)
    if tenant_id is not None:
        stmt = stmt.where(Tenant.id != tenant_id)
    with unscoped(ctx.session, "a sibling's name must be unique; only its existence is read"):
        taken = ctx.session.scalar(stmt.limit(1))
    if taken is not None:
        raise Conflict(f"a tenant named {name!r} exists already under this MSP")


def features_for(tenant: Tenant, mode: FlowMode, modules: list[str]) -> dict[str, list[str]]:
    return features.unlocked(tenant.plan, mode, modules)


def _wake_all_agents(ctx: Ctx, tenant_id: uuid.UUID) -> None:
    for agent_id in ctx.session.scalars(select(Agent.id).where(Agent.tenant_id == tenant_id)):
        wake(ctx.session, agent_id)


def check_plan(plan: str) -> None:
    if plan not in features.PLANS:
        raise Invalid(f"unknown plan {plan!r}; plans are {', '.join(sorted(features.PLANS))}")
