"""Tenants and their sites, and who is signed in: the types, queries and mutations."""

import enum
from datetime import datetime
from typing import Annotated

import strawberry
from strawberry.types import Info

from dockyard.agent.protocol import FlowMode
from dockyard.cloud.domain import features, tenants
from dockyard.cloud.domain import rows as r
from dockyard.cloud.domain.permissions import Permission as P
from dockyard.cloud.domain.permissions import Role

from . import relay
from .context import Context
from .errors import InvalidInput, NameTaken, PermissionDenied, TenantArchived, TenantNotFound
from .fields import mutation, parse_id, query

strawberry.enum(FlowMode, description="What may go up to the cloud: config < metadata < data.")
strawberry.enum(Role, description="A member's role in a tenant, least to most.")


@strawberry.enum(description="An MSP manages customer tenants, its children.")
class TenantKind(enum.Enum):
    MSP = "msp"
    CUSTOMER = "customer"


@strawberry.enum(description="What a tenant pays for: the features docking unlocks.")
class Plan(enum.Enum):
    FREE = "free"
    STANDARD = "standard"
    ENTERPRISE = "enterprise"


assert {p.value for p in Plan} == set(features.PLANS), "Plan and features.PLANS disagree"


@strawberry.enum(description="How a grant reaches a tenant.")
class GrantVia(enum.Enum):
    DIRECT = "direct"
    """A membership of the tenant itself."""
    MSP = "msp"
    """A membership of its MSP."""


@strawberry.type
class Site:
    id: strawberry.ID
    tenant_id: strawberry.ID
    name: str
    max_flow: FlowMode | None

    @classmethod
    def of(cls, row: r.Site) -> "Site":
        return cls(
            id=strawberry.ID(str(row.id)),
            tenant_id=strawberry.ID(str(row.tenant_id)),
            name=row.name,
            max_flow=FlowMode(row.max_flow) if row.max_flow else None,
        )


@strawberry.type
class Tenant:
    id: strawberry.ID
    parent_id: strawberry.ID | None
    name: str
    kind: TenantKind
    flow_mode: FlowMode
    plan: Plan
    created_at: datetime
    archived_at: datetime | None

    @classmethod
    def of(cls, row: r.Tenant) -> "Tenant":
        return cls(
            id=strawberry.ID(str(row.id)),
            parent_id=strawberry.ID(str(row.parent_id)) if row.parent_id else None,
            name=row.name,
            kind=TenantKind(row.kind),
            flow_mode=FlowMode(row.flow_mode),
            plan=Plan(row.plan),
            created_at=row.created_at,
            archived_at=row.archived_at,
        )


async def site_by_id(info: Info[Context, None], site_id: str) -> Site | None:
    """A site through the request's batch loader (another tenant's loads as None)."""
    loader = info.context.loader("site", lambda ctx, ids: ctx.load(r.Site, ids))
    row = await loader.load(parse_id(site_id, "siteId"))
    return Site.of(row) if row else None


async def tenant_by_id(info: Info[Context, None], tenant_id: str) -> Tenant | None:
    loader = info.context.loader("tenant", lambda ctx, ids: ctx.load(r.Tenant, ids))
    row = await loader.load(parse_id(tenant_id, "tenantId"))
    return Tenant.of(row) if row else None


@strawberry.type
class Membership:
    """One grant; a tenant may have one of each `via`, with different roles."""

    tenant_id: strawberry.ID
    role: Role
    via: GrantVia
    msp_id: strawberry.ID | None = strawberry.field(
        description="The MSP whose membership grants this one; null for a direct grant."
    )

    @classmethod
    def of(cls, grant: tenants.Grant) -> "Membership":
        return cls(
            tenant_id=strawberry.ID(str(grant.tenant_id)),
            role=grant.role,
            via=GrantVia.DIRECT if grant.direct else GrantVia.MSP,
            msp_id=strawberry.ID(str(grant.msp_id)) if grant.msp_id else None,
        )


@strawberry.type
class Me:
    id: strawberry.ID
    email: str
    name: str
    memberships: list[Membership] = strawberry.field(
        description="Every grant of the signed-in user (one per tenant and `via`, so few)."
    )


TenantConnection = relay.Connection[Tenant]
SiteConnection = relay.Connection[Site]

TenantsResult = Annotated[TenantConnection | InvalidInput, strawberry.union("TenantsResult")]
TenantResult = Annotated[Tenant | TenantNotFound | InvalidInput, strawberry.union("TenantResult")]
SitesResult = Annotated[
    SiteConnection | TenantNotFound | PermissionDenied | InvalidInput,
    strawberry.union("SitesResult"),
]
TenantChange = Tenant | TenantNotFound | PermissionDenied | TenantArchived | InvalidInput
CreateTenantResult = Annotated[TenantChange | NameTaken, strawberry.union("CreateTenantResult")]
RenameTenantResult = Annotated[TenantChange | NameTaken, strawberry.union("RenameTenantResult")]
ArchiveTenantResult = Annotated[TenantChange, strawberry.union("ArchiveTenantResult")]
SetFlowModeResult = Annotated[TenantChange, strawberry.union("SetFlowModeResult")]
SetPlanResult = Annotated[TenantChange, strawberry.union("SetPlanResult")]
CreateSiteResult = Annotated[
    Site | TenantNotFound | PermissionDenied | TenantArchived | NameTaken | InvalidInput,
    strawberry.union("CreateSiteResult"),
]


@strawberry.type
class TenantQuery:
    @query(Me)
    async def me(self, info: Info[Context, None]) -> Me:
        user, grants = await info.context.read(
            lambda ctx: (tenants.current_user(ctx), tenants.grants(ctx))
        )
        return Me(
            id=strawberry.ID(str(user.id)),
            email=user.email,
            name=user.name,
            memberships=[Membership.of(g) for g in grants],
        )

    @query(TenantsResult)
    async def tenants(
        self, info: Info[Context, None], first: int = relay.FIRST, after: str | None = None
    ) -> TenantConnection:
        """The tenants you see: your own and, through an MSP, its children."""
        page = await info.context.read(
            lambda ctx: tenants.list_visible(ctx, relay.request(first, after))
        )
        return relay.connection(page, Tenant.of, after)

    @query(TenantResult)
    async def tenant(self, info: Info[Context, None], id: strawberry.ID) -> Tenant:
        tid = parse_id(id, "id")
        return Tenant.of(await info.context.read(lambda ctx: tenants.get(ctx, tid)))

    @query(SitesResult)
    async def sites(
        self,
        info: Info[Context, None],
        tenant_id: strawberry.ID,
        first: int = relay.FIRST,
        after: str | None = None,
    ) -> SiteConnection:
        tid = parse_id(tenant_id, "tenantId")
        page = await info.context.read(
            lambda ctx: tenants.sites(ctx, tid, relay.request(first, after))
        )
        return relay.connection(page, Site.of, after)


@strawberry.type
class TenantMutation:
    @mutation(CreateTenantResult, P.TENANT_CHILD_CREATE)
    async def create_tenant(
        self,
        info: Info[Context, None],
        parent_id: strawberry.ID,
        name: str,
        flow_mode: FlowMode = FlowMode.CONFIG,
        plan: Plan = Plan.FREE,
    ) -> Tenant:
        """A child tenant of an MSP, audited in both."""
        pid = parse_id(parent_id, "parentId")
        row = await info.context.write(
            lambda ctx: tenants.create_child_tenant(ctx, pid, name, flow_mode, plan.value)
        )
        return Tenant.of(row)

    @mutation(RenameTenantResult, P.TENANT_RENAME)
    async def rename_tenant(
        self, info: Info[Context, None], tenant_id: strawberry.ID, name: str
    ) -> Tenant:
        tid = parse_id(tenant_id, "tenantId")
        return Tenant.of(await info.context.write(lambda ctx: tenants.rename(ctx, tid, name)))

    @mutation(ArchiveTenantResult, P.TENANT_ARCHIVE)
    async def archive_tenant(self, info: Info[Context, None], tenant_id: strawberry.ID) -> Tenant:
        """Retire a child tenant: its agents are revoked and it takes no more changes."""
        tid = parse_id(tenant_id, "tenantId")
        return Tenant.of(await info.context.write(lambda ctx: tenants.archive(ctx, tid)))

    @mutation(SetFlowModeResult, P.TENANT_FLOW_NARROW, P.TENANT_FLOW_WIDEN)
    async def set_flow_mode(
        self, info: Info[Context, None], tenant_id: strawberry.ID, flow_mode: FlowMode
    ) -> Tenant:
        tid = parse_id(tenant_id, "tenantId")
        row = await info.context.write(lambda ctx: tenants.set_flow_mode(ctx, tid, flow_mode))
        return Tenant.of(row)

    @mutation(SetPlanResult, P.TENANT_PLAN)
    async def set_plan(
        self, info: Info[Context, None], tenant_id: strawberry.ID, plan: Plan
    ) -> Tenant:
        tid = parse_id(tenant_id, "tenantId")
        row = await info.context.write(lambda ctx: tenants.set_plan(ctx, tid, plan.value))
        return Tenant.of(row)

    @mutation(CreateSiteResult, P.SITE_WRITE)
    async def create_site(
        self,
        info: Info[Context, None],
        tenant_id: strawberry.ID,
        name: str,
        max_flow: FlowMode | None = None,
    ) -> Site:
        tid = parse_id(tenant_id, "tenantId")
        row = await info.context.write(lambda ctx: tenants.create_site(ctx, tid, name, max_flow))
        return Site.of(row)
