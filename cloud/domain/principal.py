"""Who is asking, resolved once at the edge, and the one check of what it may do."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import Archived, NotFound, Refused
from .permissions import READS, TABLE, Permission, Role

__all__ = ["Principal", "Role"]


@dataclass(frozen=True)
class Principal:
    """A user (through an API token or a session) or an agent (through an access token).

    `direct` maps each tenant where the principal holds a membership to that role;
    `via_msp` maps each child tenant of an MSP where it holds one to the MSP role. A tenant
    may appear in both, with different roles: they are kept apart, and `require` asks the
    permission table which of them counts (see `permissions.py`). `archived` lists the
    visible tenants that are archived: only reads are allowed there.
    """

    kind: str  # "user", "agent", "system" or "anonymous"
    id: uuid.UUID | None
    direct: Mapping[uuid.UUID, Role] = field(default_factory=dict)
    via_msp: Mapping[uuid.UUID, Role] = field(default_factory=dict)
    archived: frozenset[uuid.UUID] = frozenset()

    @property
    def tenant_ids(self) -> frozenset[uuid.UUID]:
        return frozenset(self.direct) | frozenset(self.via_msp)

    def require(self, tenant_id: uuid.UUID, permission: Permission, what: str = "tenant") -> None:
        """NotFound for a tenant out of sight; `Refused` (a Forbidden the transports audit)
        when neither grant allows it; Archived (a Conflict) for a change to an archived tenant."""
        if tenant_id not in self.tenant_ids:
            raise NotFound(what)
        direct, via_msp = self.direct.get(tenant_id), self.via_msp.get(tenant_id)
        rule = TABLE[permission]
        if not rule.allows(direct, via_msp):
            raise Refused(permission.value, tenant_id, _refusal(permission, direct, via_msp))
        if tenant_id in self.archived and permission not in READS:
            raise Archived("this tenant is archived: it takes no more changes")

    @classmethod
    def agent(cls, agent_id: uuid.UUID, tenant_id: uuid.UUID) -> Principal:
        return cls("agent", agent_id, {tenant_id: Role.OPERATOR})

    @classmethod
    def system(cls, tenant_ids: frozenset[uuid.UUID]) -> Principal:
        return cls("system", None, dict.fromkeys(tenant_ids, Role.OWNER))


def _refusal(permission: Permission, direct: Role | None, via_msp: Role | None) -> str:
    rule = TABLE[permission]
    needs = []
    if rule.direct is not None:
        needs.append(f"the {rule.direct.value} role in this tenant")
    if rule.via_msp is not None:
        needs.append(f"the {rule.via_msp.value} role in its MSP")
    held = []
    if direct is not None:
        held.append(f"{direct.value} here")
    if via_msp is not None:
        held.append(f"{via_msp.value} through the MSP")
    return f"{permission.value} needs {' or '.join(needs)}; you are {' and '.join(held)}"
