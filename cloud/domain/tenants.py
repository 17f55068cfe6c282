"""Tenants, their MSP parents, members, sites, plans and flow modes."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from dockyard.agent.protocol import FlowMode
from dockyard.cloud.store.models import Agent, Membership, Site, Tenant
from dockyard.cloud.store.tenancy import unscoped

from . import audit, features
from .context import Ctx
from .errors import Conflict, Invalid, NotFound
from .principal import Principal, Role
from .sequence import wake


def principal_for_user(session: Session, user_id: uuid.UUID) -> Principal:
    """Resolve a user's roles once, at the edge: direct memberships, then MSP children."""
    child = aliased(Tenant)
    with unscoped(session, "resolving a user's own memberships across tenants"):
        rows = session.execute(
            select(Membership.tenant_id, Membership.role, child.id)
            .outerjoin(child, child.parent_id == Membership.tenant_id)
            .where(Membership.user_id == user_id)
        ).all()
    return principal_from(user_id, [tuple(r) for r in rows])


def principal_from(
    user_id: uuid.UUID, rows: list[tuple[uuid.UUID | None, str | None, uuid.UUID | None]]
) -> Principal:
    """A user's principal from rows of (tenant, role, child): one per direct membership
    and child of its tenant (child None for a tenant without children, tenant None for a
    user without memberships). An MSP's children inherit the user's role there unless
    the user holds a wider one in the child itself."""
    roles: dict[uuid.UUID, Role] = {tid: Role(role) for tid, role, _ in rows if tid and role}
    direct = frozenset(roles)
    for parent_id, _, child_id in rows:
        if parent_id is None or child_id is None:
            continue
        inherited = roles[parent_id]
        if child_id not in roles or not roles[child_id].covers(inherited):
            roles[child_id] = inherited
    return Principal("user", user_id, roles, direct)


def create_child_tenant(
    ctx: Ctx, parent_id: uuid.UUID, name: str, flow_mode: FlowMode, plan: str
) -> Tenant:
    ctx.principal.require(parent_id, Role.ADMIN)
    parent = get(ctx, parent_id)
    if parent.kind != "msp":
        raise Invalid("only an MSP tenant has child tenants")
    check_plan(plan)
    name = _check_name(name)
    tenant = Tenant(
        parent_id=parent_id,
        name=name,
        kind="customer",
        flow_mode=flow_mode.value,
        plan=plan,
        created_at=ctx.now(),
    )
    ctx.session.add(tenant)
    ctx.session.flush()
    audit.record(ctx, parent_id, "tenant.create", target=str(tenant.id))
    audit.record(ctx, tenant.id, "tenant.create", target=str(tenant.id))
    return tenant


def get(ctx: Ctx, tenant_id: uuid.UUID) -> Tenant:
    tenant = ctx.session.get(Tenant, tenant_id)
    if tenant is None or tenant_id not in ctx.principal.tenant_ids:
        raise NotFound("tenant")
    return tenant


def list_visible(ctx: Ctx) -> list[Tenant]:
    return list(ctx.session.scalars(select(Tenant).order_by(Tenant.created_at, Tenant.id)))


def set_flow_mode(ctx: Ctx, tenant_id: uuid.UUID, mode: FlowMode) -> Tenant:
    """Narrowing needs an admin (an MSP's admin will do); widening needs the tenant's own
    owner, so an MSP can never open a customer's data flow on its own."""
    ctx.principal.require(tenant_id, Role.ADMIN)
    tenant = get(ctx, tenant_id)
    old = FlowMode(tenant.flow_mode)
    if mode.rank > old.rank:
        ctx.principal.require_direct_owner(tenant_id)
    tenant.flow_mode = mode.value
    audit.record(ctx, tenant_id, "tenant.flow_mode", target=str(tenant_id), old=old, new=mode)
    if tenant.parent_id is not None and tenant.parent_id in ctx.principal.tenant_ids:
        audit.record(
            ctx, tenant.parent_id, "tenant.flow_mode", target=str(tenant_id), old=old, new=mode
        )
    _wake_all_agents(ctx, tenant_id)
    return tenant


def set_plan(ctx: Ctx, tenant_id: uuid.UUID, plan: str) -> Tenant:
    ctx.principal.require(tenant_id, Role.OWNER)
    check_plan(plan)
    tenant = get(ctx, tenant_id)
    old = tenant.plan
    tenant.plan = plan
    audit.record(ctx, tenant_id, "tenant.plan", target=str(tenant_id), old=old, new=plan)
    _wake_all_agents(ctx, tenant_id)
    return tenant


def add_member(ctx: Ctx, tenant_id: uuid.UUID, user_id: uuid.UUID, role: Role) -> Membership:
    ctx.principal.require(tenant_id, Role.OWNER if role is Role.OWNER else Role.ADMIN)
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
    ctx.principal.require(tenant_id, Role.ADMIN)
    get(ctx, tenant_id)
    name = _check_name(name)
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
    ctx.principal.require(site.tenant_id, Role.ADMIN, "site")
    site.max_flow = max_flow.value if max_flow else None
    audit.record(ctx, site.tenant_id, "site.flow_mode", target=str(site_id), new=max_flow)
    for agent_id in ctx.session.scalars(select(Agent.id).where(Agent.site_id == site_id)):
        wake(ctx.session, agent_id)
    return site


def features_for(tenant: Tenant, mode: FlowMode, modules: list[str]) -> dict[str, list[str]]:
    return features.unlocked(tenant.plan, mode, modules)


def _wake_all_agents(ctx: Ctx, tenant_id: uuid.UUID) -> None:
    for agent_id in ctx.session.scalars(select(Agent.id).where(Agent.tenant_id == tenant_id)):
        wake(ctx.session, agent_id)


def check_plan(plan: str) -> None:
    if plan not in features.PLANS:
        raise Invalid(f"unknown plan {plan!r}; plans are {', '.join(sorted(features.PLANS))}")


def _check_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise Invalid("a name has 1 to 200 characters")
    return name
