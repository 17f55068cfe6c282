"""What `/auth/me` tells the portal about the signed-in user: who it is and every tenant it
may act in, with the role that counts there, so the portal can offer a tenant switcher
(an MSP's user sees its children, `via` "msp")."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.cloud.domain.principal import Principal
from dockyard.cloud.store.models import Tenant, User


def profile(session: Session, principal: Principal) -> dict[str, Any] | None:
    """None when the principal is no user (an agent) or its user is gone."""
    user = session.get(User, principal.id) if principal.kind == "user" and principal.id else None
    if user is None:
        return None
    rows = session.execute(
        select(Tenant.id, Tenant.name).where(Tenant.id.in_(list(principal.tenant_ids)))
    )
    names = {tenant_id: name for tenant_id, name in rows}
    grants = [(t, r, "direct") for t, r in principal.direct.items()]
    grants += [(t, r, "msp") for t, r in principal.via_msp.items()]
    grants.sort(key=lambda g: (names.get(g[0], ""), g[2]))
    return {
        "id": str(user.id),
        "email": user.email,
        "name": user.name,
        "memberships": [
            {
                "tenantId": str(t),
                "tenantName": names.get(t, ""),
                "role": role.value,
                "via": via,
                "archived": t in principal.archived,
            }
            for t, role, via in grants
        ],
    }
