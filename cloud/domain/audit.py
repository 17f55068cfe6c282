"""The audit log: who did what to which tenant, including what was refused."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
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
    ctx: Ctx, action: str, entries: list[tuple[uuid.UUID | None, str | None, dict[str, Any]]]
) -> Rows:
    """Records of one action, as (tenant, target, detail), for `insert_together` with the
    rows they are about: issuing a command writes its audit record in the same statement.
    A tenant None is filled in by the statement (`Rows.claiming`)."""
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


@dataclass(frozen=True)
class LogFilter:
    """What the audit log is narrowed to: an action's prefix (`policy.` finds every policy
    record), one outcome, one kind of actor; none set, everything."""

    action: str | None = None
    outcome: str | None = None
    actor_kind: str | None = None
    newest_first: bool = False


def log(
    ctx: Ctx, tenant_id: uuid.UUID, request: PageRequest, where: LogFilter = LogFilter()
) -> Page[AuditRecord]:
    """The tenant's audit log, oldest first unless asked otherwise."""
    ctx.principal.require(tenant_id, P.AUDIT_READ)
    stmt = select(AuditRecord).where(AuditRecord.tenant_id == tenant_id)
    if where.action:
        # A prefix, matched literally: `_` and `%` in it are no wildcards (LIKE with an
        # escape works alike on PostgreSQL and SQLite).
        stmt = stmt.where(AuditRecord.action.startswith(where.action, autoescape=True))
    if where.outcome:
        stmt = stmt.where(AuditRecord.outcome == where.outcome)
    if where.actor_kind:
        stmt = stmt.where(AuditRecord.actor_kind == where.actor_kind)
    return keyset(ctx.session, stmt, AuditRecord.at, request, descending=where.newest_first)
