"""Enrolment tokens: the types, queries and mutations."""

from datetime import datetime, timedelta
from typing import Annotated

import strawberry
from strawberry.types import Info

from dockyard.agent.protocol import FlowMode
from dockyard.cloud.domain import enrolment
from dockyard.cloud.domain import rows as r
from dockyard.cloud.domain.permissions import Permission as P

from . import relay
from .context import Context
from .errors import (
    EnrolmentTokenNotFound,
    InvalidInput,
    PermissionDenied,
    SiteNotFound,
    TenantArchived,
    TenantNotFound,
)
from .fields import mutation, parse_id, query


@strawberry.type
class EnrolmentToken:
    id: strawberry.ID
    tenant_id: strawberry.ID
    site_id: strawberry.ID
    max_flow: FlowMode
    note: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    used_by_agent_id: strawberry.ID | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: r.EnrolmentToken) -> "EnrolmentToken":
        return cls(
            id=strawberry.ID(str(row.id)),
            tenant_id=strawberry.ID(str(row.tenant_id)),
            site_id=strawberry.ID(str(row.site_id)),
            max_flow=FlowMode(row.max_flow),
            note=row.note,
            created_at=row.created_at,
            expires_at=row.expires_at,
            used_at=row.used_at,
            used_by_agent_id=strawberry.ID(str(row.used_by_agent_id))
            if row.used_by_agent_id
            else None,
            revoked_at=row.revoked_at,
        )


@strawberry.type
class EnrolmentTokenCreated:
    token: EnrolmentToken
    secret: str = strawberry.field(description="Shown once; only its hash is kept.")


EnrolmentTokenConnection = relay.Connection[EnrolmentToken]

EnrolmentTokensResult = Annotated[
    EnrolmentTokenConnection | TenantNotFound | PermissionDenied | InvalidInput,
    strawberry.union("EnrolmentTokensResult"),
]
CreateEnrolmentTokenResult = Annotated[
    EnrolmentTokenCreated | SiteNotFound | PermissionDenied | TenantArchived | InvalidInput,
    strawberry.union("CreateEnrolmentTokenResult"),
]
RevokeEnrolmentTokenResult = Annotated[
    EnrolmentToken | EnrolmentTokenNotFound | PermissionDenied | TenantArchived | InvalidInput,
    strawberry.union("RevokeEnrolmentTokenResult"),
]


@strawberry.type
class EnrolmentQuery:
    @query(EnrolmentTokensResult)
    async def enrolment_tokens(
        self,
        info: Info[Context, None],
        tenant_id: strawberry.ID,
        first: int = relay.FIRST,
        after: str | None = None,
    ) -> EnrolmentTokenConnection:
        tid = parse_id(tenant_id, "tenantId")
        page = await info.context.read(
            lambda ctx: enrolment.tokens(ctx, tid, relay.request(first, after))
        )
        return relay.connection(page, EnrolmentToken.of, after)


@strawberry.type
class EnrolmentMutation:
    @mutation(CreateEnrolmentTokenResult, P.ENROLMENT_WRITE)
    async def create_enrolment_token(
        self,
        info: Info[Context, None],
        site_id: strawberry.ID,
        max_flow: FlowMode = FlowMode.CONFIG,
        ttl_minutes: int = 60,
        note: str = "",
    ) -> EnrolmentTokenCreated:
        sid = parse_id(site_id, "siteId")
        new = await info.context.write(
            lambda ctx: enrolment.create_token(
                ctx, sid, max_flow, timedelta(minutes=ttl_minutes), note
            )
        )
        return EnrolmentTokenCreated(token=EnrolmentToken.of(new.token), secret=new.secret)

    @mutation(RevokeEnrolmentTokenResult, P.ENROLMENT_WRITE)
    async def revoke_enrolment_token(
        self, info: Info[Context, None], id: strawberry.ID
    ) -> EnrolmentToken:
        tid = parse_id(id, "id")
        row = await info.context.write(lambda ctx: enrolment.revoke_token(ctx, tid))
        return EnrolmentToken.of(row)
