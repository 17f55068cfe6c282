"""The audit log: who did what to which tenant, including what was refused."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from dockyard.cloud.store.db import Rows
from dockyard.cloud.store.models import AuditRecord

from .context import Ctx
from .errors import Refused
from .pages import Page, PageRequest, keyset
from .permissions import Permission as P


def record(
    ctx: Ctx,
    tenant_id: uuid.UUID,
    action: str,
    *,
    target: str | None = None,
    outcome: str = "ok",
    **detail: Any,
) -> None:
    ctx.session.add(
        AuditRecord(
            tenant_id=tenant_id,
            at=ctx.now(),
            actor_kind=ctx.principal.kind,
            actor_id=ctx.principal.id,
            action=action,
            target=target,
            outcome=outcome,
            detail=detail,
        )
    )


def records(
    ctx: Ctx, action: str, entries: list[tuple[uuid.UUID, str | None, dict[str, Any]]]
) -> Rows:
    """Records of one action, as (tenant, target, detail), for `insert_together` with the
    rows they are about: issuing a command writes its audit record in the same statement."""
    return Rows(
        AuditRecord,
        {
            "id": [uuid.uuid4() for _ in entries],
            "tenant_id": [tenant_id for tenant_id, _, _ in entries],
            "target": [target for _, target, _ in entries],
            "detail": [detail for _, _, detail in entries],
        },
        {
            "at": ctx.now(),
            "actor_kind": ctx.principal.kind,
            "actor_id": ctx.principal.id,
            "action": action,
            "outcome": "ok",
        },
    )


def refused(ctx: Ctx, error: Refused) -> None:
    """A refused privileged act, in the tenant it was aimed at. The caller writes it in a
    transaction of its own: the request's transaction is rolled back."""
    record(
        ctx,
        error.tenant_id,
        error.permission,
        outcome="refused",
        reason=error.message,
    )


def log(ctx: Ctx, tenant_id: uuid.UUID, request: PageRequest) -> Page[AuditRecord]:
    """The tenant's audit log, oldest first."""
    ctx.principal.require(tenant_id, P.AUDIT_READ)
    stmt = select(AuditRecord).where(AuditRecord.tenant_id == tenant_id)
    return keyset(ctx.session, stmt, AuditRecord.at, request)
