"""API tokens limited to a tenant: the types, queries and mutations. A token's secret is in
the answer that creates it and nowhere else."""

from datetime import datetime
from typing import Annotated

import strawberry
from strawberry.types import Info

from dockyard.cloud.domain import api_tokens
from dockyard.cloud.domain import rows as r
from dockyard.cloud.domain.permissions import Permission as P

from . import relay
from .context import Context
from .errors import (
    ApiTokenNotFound,
    InvalidInput,
    PermissionDenied,
    TenantArchived,
    TenantNotFound,
)
from .fields import mutation, parse_id, query


@strawberry.type(
    description="A bearer token limited to one tenant, where it acts with its maker's grants."
)
class ApiToken:
    id: strawberry.ID
    tenant_id: strawberry.ID
    user_id: strawberry.ID = strawberry.field(description="Whose grants the token carries.")
    name: str
    created_at: datetime
    expires_at: datetime | None = strawberry.field(
        description="Past it the token is refused; null only for tokens `dockyard bootstrap` made."
    )
    last_used_at: datetime | None = strawberry.field(
        description="When a request last came with it, to the minute; null if never."
    )
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: r.ApiToken) -> "ApiToken":
        return cls(
            id=strawberry.ID(str(row.id)),
            tenant_id=strawberry.ID(str(row.tenant_id)),
            user_id=strawberry.ID(str(row.user_id)),
            name=row.name,
            created_at=row.created_at,
            expires_at=row.expires_at,
            last_used_at=row.last_used_at,
            revoked_at=row.revoked_at,
        )


@strawberry.type
class NewApiToken:
    token: ApiToken
    secret: str = strawberry.field(
        description="Send it as `Authorization: Bearer <secret>`. Shown this once: copy it now."
    )


ApiTokenConnection = relay.Connection[ApiToken]

ApiTokensResult = Annotated[
    ApiTokenConnection | TenantNotFound | PermissionDenied | InvalidInput,
    strawberry.union("ApiTokensResult"),
]
CreateApiTokenResult = Annotated[
    NewApiToken | TenantNotFound | PermissionDenied | TenantArchived | InvalidInput,
    strawberry.union("CreateApiTokenResult"),
]
RevokeApiTokenResult = Annotated[
    ApiToken | ApiTokenNotFound | PermissionDenied | TenantArchived | InvalidInput,
    strawberry.union("RevokeApiTokenResult"),
]


@strawberry.type
class ApiTokenQuery:
    @query(ApiTokensResult)
    async def api_tokens(
        self,
        info: Info[Context, None],
        tenant_id: strawberry.ID,
        first: int = relay.FIRST,
        after: str | None = None,
        include_revoked: bool = False,
    ) -> ApiTokenConnection:
        """The tokens limited to this tenant, newest first."""
        tid = parse_id(tenant_id, "tenantId")
        page = await info.context.read(
            lambda ctx: api_tokens.listing(
                ctx, tid, relay.request(first, after), include_revoked=include_revoked
            )
        )
        return relay.connection(page, ApiToken.of, after)


@strawberry.type
class ApiTokenMutation:
    @mutation(CreateApiTokenResult, P.API_TOKEN_WRITE)
    async def create_api_token(
        self,
        info: Info[Context, None],
        tenant_id: strawberry.ID,
        name: str,
        expires_in_days: int = 90,
    ) -> NewApiToken:
        """A token for you, limited to this tenant, expiring after `expiresInDays` (1 to 366)."""
        tid = parse_id(tenant_id, "tenantId")
        made = await info.context.write(
            lambda ctx: api_tokens.create(ctx, tid, name, expires_in_days)
        )
        return NewApiToken(token=ApiToken.of(made.token), secret=made.secret)

    @mutation(RevokeApiTokenResult, P.API_TOKEN_WRITE)
    async def revoke_api_token(self, info: Info[Context, None], id: strawberry.ID) -> ApiToken:
        tid = parse_id(id, "id")
        return ApiToken.of(await info.context.write(lambda ctx: api_tokens.revoke(ctx, tid)))
