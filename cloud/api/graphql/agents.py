"""Agents: the types, queries and mutations."""

from datetime import datetime
from typing import Annotated

import strawberry
from strawberry.types import Info

from dockyard.agent.protocol import FlowMode
from dockyard.cloud.domain import agents
from dockyard.cloud.domain import rows as r
from dockyard.cloud.domain.permissions import Permission as P

from . import relay
from .context import Context
from .errors import AgentNotFound, InvalidInput, PermissionDenied, TenantArchived, TenantNotFound
from .fields import mutation, parse_id, query
from .tenants import Site, Tenant, site_by_id, tenant_by_id


@strawberry.type
class ModuleInfo:
    name: str
    version: str
    standalone_features: list[str]


@strawberry.type
class Agent:
    id: strawberry.ID
    tenant_id: strawberry.ID
    site_id: strawberry.ID
    name: str
    max_flow: FlowMode
    last_seq: int
    acked_seq: int
    enrolled_at: datetime
    last_seen_at: datetime | None
    clock_skew_s: int | None
    """Seconds the agent's clock runs ahead of the cloud's (negative: behind), as it last
    measured and reported; notices and deadlines follow the cloud's clock regardless."""
    revoked_at: datetime | None
    possible_duplicate_of: list[strawberry.ID]
    modules: list[ModuleInfo]

    @strawberry.field
    async def site(self, info: Info[Context, None]) -> Site | None:
        return await site_by_id(info, self.site_id)

    @strawberry.field
    async def tenant(self, info: Info[Context, None]) -> Tenant | None:
        return await tenant_by_id(info, self.tenant_id)

    @classmethod
    def of(cls, row: r.Agent) -> "Agent":
        return cls(
            id=strawberry.ID(str(row.id)),
            tenant_id=strawberry.ID(str(row.tenant_id)),
            site_id=strawberry.ID(str(row.site_id)),
            name=row.name,
            max_flow=FlowMode(row.max_flow),
            last_seq=row.last_seq,
            acked_seq=row.acked_seq,
            enrolled_at=row.enrolled_at,
            last_seen_at=row.last_seen_at,
            clock_skew_s=row.clock_skew_s,
            revoked_at=row.revoked_at,
            possible_duplicate_of=[strawberry.ID(d) for d in row.possible_duplicate_of],
            modules=[
                ModuleInfo(
                    name=x["name"],
                    version=x["version"],
                    standalone_features=list(x.get("standalone_features", [])),
                )
                for x in row.modules
            ],
        )


AgentConnection = relay.Connection[Agent]

AgentsResult = Annotated[
    AgentConnection | TenantNotFound | PermissionDenied | InvalidInput,
    strawberry.union("AgentsResult"),
]
AgentResult = Annotated[
    Agent | AgentNotFound | PermissionDenied | InvalidInput, strawberry.union("AgentResult")
]
RevokeAgentResult = Annotated[
    Agent | AgentNotFound | PermissionDenied | TenantArchived | InvalidInput,
    strawberry.union("RevokeAgentResult"),
]


@strawberry.type
class AgentQuery:
    @query(AgentsResult)
    async def agents(
        self,
        info: Info[Context, None],
        tenant_id: strawberry.ID,
        first: int = relay.FIRST,
        after: str | None = None,
        include_revoked: bool = False,
    ) -> AgentConnection:
        tid = parse_id(tenant_id, "tenantId")
        page = await info.context.read(
            lambda ctx: agents.listing(
                ctx, tid, relay.request(first, after), include_revoked=include_revoked
            )
        )
        return relay.connection(page, Agent.of, after)

    @query(AgentResult)
    async def agent(self, info: Info[Context, None], id: strawberry.ID) -> Agent:
        aid = parse_id(id, "id")
        return Agent.of(await info.context.read(lambda ctx: agents.get(ctx, aid)))


@strawberry.type
class AgentMutation:
    @mutation(RevokeAgentResult, P.AGENT_REVOKE)
    async def revoke_agent(self, info: Info[Context, None], id: strawberry.ID) -> Agent:
        aid = parse_id(id, "id")
        return Agent.of(await info.context.write(lambda ctx: agents.revoke(ctx, aid)))
