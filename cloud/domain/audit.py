"""The audit log: who did what to which tenant, including what was refused."""

from __future__ import annotations

import uuid
from typing import Any

from dockyard.cloud.store.models import AuditRecord

from .context import Ctx


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
