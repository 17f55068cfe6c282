"""The audit log: the type and its query."""

import enum
from datetime import datetime
from typing import Annotated, cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from dockyard.cloud.domain import audit, text
from dockyard.cloud.domain import rows as r

from . import relay
from .context import Context
from .errors import InvalidInput, PermissionDenied, TenantNotFound
from .fields import parse_id, query


@strawberry.enum(description="Who acted.")
class ActorKind(enum.Enum):
    USER = "user"
    AGENT = "agent"
    SYSTEM = "system"
    ANONYMOUS = "anonymous"


@strawberry.type
class AuditRecord:
    id: strawberry.ID
    tenant_id: strawberry.ID
    at: datetime
    actor_kind: ActorKind
    actor_id: strawberry.ID | None
    action: str = strawberry.field(
        description="`tenant.rename`, a permission refused (`tenant:flow:widen`), an agent's "
        "own record (`agent.vm.power`): an open set, as modules add their own."
    )
    target: str | None
    outcome: str = strawberry.field(
        description="`ok`, `refused`, or what an agent reported (`not_sent`, ...)."
    )
    detail: JSON

    @classmethod
    def of(cls, row: r.AuditRecord) -> "AuditRecord":
        return cls(
            id=strawberry.ID(str(row.id)),
            tenant_id=strawberry.ID(str(row.tenant_id)),
            at=row.at,
            actor_kind=ActorKind(row.actor_kind),
            actor_id=strawberry.ID(str(row.actor_id)) if row.actor_id else None,
            action=row.action,
            target=row.target,
            outcome=row.outcome,
            detail=cast(JSON, row.detail),
        )


AuditRecordConnection = relay.Connection[AuditRecord]

AuditLogResult = Annotated[
    AuditRecordConnection | TenantNotFound | PermissionDenied | InvalidInput,
    strawberry.union("AuditLogResult"),
]


@strawberry.type
class AuditQuery:
    @query(AuditLogResult)
    async def audit_log(
        self,
        info: Info[Context, None],
        tenant_id: strawberry.ID,
        first: int = relay.FIRST,
        after: str | None = None,
        action: Annotated[
            str | None,
            strawberry.argument(description="Only actions that start so (`policy.`)."),
        ] = None,
        outcome: Annotated[
            str | None, strawberry.argument(description="Only this outcome (`refused`).")
        ] = None,
        actor_kind: ActorKind | None = None,
        newest_first: bool = False,
    ) -> AuditRecordConnection:
        tid = parse_id(tenant_id, "tenantId")
        where = audit.LogFilter(
            action=text.plain("action", action) if action else None,
            outcome=text.plain("outcome", outcome) if outcome else None,
            actor_kind=actor_kind.value if actor_kind else None,
            newest_first=newest_first,
        )
        page = await info.context.read(
            lambda ctx: audit.log(ctx, tid, relay.request(first, after), where)
        )
        return relay.connection(page, AuditRecord.of, after)
