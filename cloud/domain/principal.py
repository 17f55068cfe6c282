"""Who is asking, resolved once at the edge, and what each role may do."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field

from .errors import Forbidden, NotFound


class Role(enum.StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"
    OWNER = "owner"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def covers(self, needed: Role) -> bool:
        return self.rank >= needed.rank


@dataclass(frozen=True)
class Principal:
    """A user (through an API token or a session) or an agent (through an access token).

    `roles` maps every tenant the principal may see to its role there: a member of an MSP
    tenant holds the same role in each of the MSP's child tenants. `direct` lists the tenants
    where the role comes from a membership of that very tenant, which some acts require.
    """

    kind: str  # "user", "agent" or "system"
    id: uuid.UUID | None
    roles: dict[uuid.UUID, Role] = field(default_factory=dict)
    direct: frozenset[uuid.UUID] = frozenset()

    @property
    def tenant_ids(self) -> frozenset[uuid.UUID]:
        return frozenset(self.roles)

    def require(self, tenant_id: uuid.UUID, role: Role, what: str = "tenant") -> None:
        """Raise NotFound for a tenant out of sight, Forbidden for too small a role."""
        have = self.roles.get(tenant_id)
        if have is None:
            raise NotFound(what)
        if not have.covers(role):
            raise Forbidden(f"this needs the {role.value} role; you are {have.value}")

    def require_direct_owner(self, tenant_id: uuid.UUID) -> None:
        self.require(tenant_id, Role.VIEWER)
        if tenant_id not in self.direct or self.roles[tenant_id] is not Role.OWNER:
            raise Forbidden("only an owner of this tenant itself may do this")

    @classmethod
    def agent(cls, agent_id: uuid.UUID, tenant_id: uuid.UUID) -> Principal:
        return cls("agent", agent_id, {tenant_id: Role.OPERATOR}, frozenset({tenant_id}))

    @classmethod
    def system(cls, tenant_ids: frozenset[uuid.UUID]) -> Principal:
        return cls("system", None, dict.fromkeys(tenant_ids, Role.OWNER), tenant_ids)
