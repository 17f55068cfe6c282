"""Every act a user may attempt, and which grant allows it: one table, read by the domain's
checks, by the GraphQL schema (each mutation names its permission) and by
docs/permissions.md (generated from `TABLE`, kept current by a test).

A grant comes from a membership of the tenant itself (`direct`) or from a membership of its
MSP (`via MSP`). The two are never merged: an MSP owner who also holds a viewer seat in a
child is a viewer there directly and an owner through the MSP, and a permission that only a
direct grant can give (opening a customer's data flow) is judged on the viewer seat alone.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


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


class Permission(enum.StrEnum):
    """`resource:action`, as warehouse names its permissions."""

    TENANT_READ = "tenant:read"
    TENANT_CHILD_CREATE = "tenant:child:create"
    TENANT_RENAME = "tenant:rename"
    TENANT_ARCHIVE = "tenant:archive"
    TENANT_FLOW_NARROW = "tenant:flow:narrow"
    TENANT_FLOW_WIDEN = "tenant:flow:widen"
    TENANT_PLAN = "tenant:plan"
    MEMBER_ADD = "member:add"
    MEMBER_ADD_OWNER = "member:add-owner"
    MEMBER_READ = "member:read"
    MEMBER_CHANGE = "member:change"
    MEMBER_CHANGE_OWNER = "member:change-owner"
    API_TOKEN_READ = "api-token:read"  # noqa: S105 - a permission, not a secret
    API_TOKEN_WRITE = "api-token:write"  # noqa: S105 - a permission, not a secret
    SITE_READ = "site:read"
    SITE_WRITE = "site:write"
    ENROLMENT_READ = "enrolment:read"
    ENROLMENT_WRITE = "enrolment:write"
    AGENT_READ = "agent:read"
    AGENT_REVOKE = "agent:revoke"
    POLICY_READ = "policy:read"
    POLICY_WRITE = "policy:write"
    POLICY_ASSIGN = "policy:assign"
    COMMAND_READ = "command:read"
    COMMAND_ISSUE = "command:issue"
    JOB_READ = "job:read"
    AUDIT_READ = "audit:read"
    VM_READ = "vm:read"
    VM_POWER = "vm:power"
    VM_SPLIT = "vm:split"


@dataclass(frozen=True)
class Rule:
    """The least role a direct grant needs, and the least an MSP's grant needs; None: that
    kind of grant never allows it."""

    direct: Role | None
    via_msp: Role | None
    why: str

    def allows(self, direct: Role | None, via_msp: Role | None) -> bool:
        return _covers(direct, self.direct) or _covers(via_msp, self.via_msp)


def _covers(have: Role | None, need: Role | None) -> bool:
    return have is not None and need is not None and have.covers(need)


V, OP, A, W = Role.VIEWER, Role.OPERATOR, Role.ADMIN, Role.OWNER
P = Permission

TABLE: dict[Permission, Rule] = {
    P.TENANT_READ: Rule(V, V, "see the tenant, its settings and its children"),
    P.TENANT_CHILD_CREATE: Rule(
        A, None, "create a child tenant under this MSP (held in the MSP itself)"
    ),
    P.TENANT_RENAME: Rule(A, A, "rename the tenant"),
    P.TENANT_ARCHIVE: Rule(
        None, A, "archive a child tenant: its agents are revoked, it takes no more changes"
    ),
    P.TENANT_FLOW_NARROW: Rule(A, A, "narrow the tenant's flow mode"),
    P.TENANT_FLOW_WIDEN: Rule(
        W, None, "widen the flow mode: only the customer's own owner opens its data flow"
    ),
    P.TENANT_PLAN: Rule(W, W, "change the tenant's plan"),
    P.MEMBER_ADD: Rule(A, A, "add a member below owner"),
    P.MEMBER_ADD_OWNER: Rule(W, W, "add an owner"),
    P.MEMBER_READ: Rule(V, V, "see the tenant's members, their roles and who is still invited"),
    P.MEMBER_CHANGE: Rule(A, A, "change a member's role or remove a member, below owner"),
    P.MEMBER_CHANGE_OWNER: Rule(W, W, "make an owner, or change or remove one"),
    P.API_TOKEN_READ: Rule(A, A, "list the API tokens limited to this tenant"),
    P.API_TOKEN_WRITE: Rule(
        A, A, "create an API token limited to this tenant (your own grants there), or revoke one"
    ),
    P.SITE_READ: Rule(V, V, "list sites"),
    P.SITE_WRITE: Rule(A, A, "create a site or change its flow ceiling"),
    P.ENROLMENT_READ: Rule(A, A, "list enrolment tokens"),
    P.ENROLMENT_WRITE: Rule(A, A, "create or revoke an enrolment token"),
    P.AGENT_READ: Rule(V, V, "see agents"),
    P.AGENT_REVOKE: Rule(A, A, "revoke an agent"),
    P.POLICY_READ: Rule(V, V, "see policies and their versions"),
    P.POLICY_WRITE: Rule(A, A, "create a policy or a new version of it"),
    P.POLICY_ASSIGN: Rule(A, A, "assign a policy to a tenant, site or agent"),
    P.COMMAND_READ: Rule(V, V, "see commands"),
    P.COMMAND_ISSUE: Rule(OP, OP, "issue commands to agents"),
    P.JOB_READ: Rule(V, V, "see jobs and their events"),
    P.AUDIT_READ: Rule(A, A, "read the audit log"),
    P.VM_READ: Rule(V, V, "see the VM catalog and idle decisions"),
    P.VM_POWER: Rule(OP, OP, "power a VM on or off through its agent"),
    P.VM_SPLIT: Rule(OP, OP, "undo a merge of VM sightings"),
}

READS = frozenset(p for p in Permission if p.value.endswith(":read"))
"""What an archived tenant still allows: its history stays readable."""


def markdown(mutations: dict[str, tuple[Permission, ...]]) -> str:
    """docs/permissions.md: the table, and which mutation needs which permission."""
    lines = [
        "# Permissions",
        "",
        "Generated from `cloud/domain/permissions.py` by",
        "`python -m dockyard.cloud.api.graphql.permissions_doc > docs/permissions.md`;",
        "a test keeps it current. A grant is *direct* (a membership of the tenant itself)",
        "or *via MSP* (a membership of its MSP); the two are never merged, and a permission",
        "is held when either kind of grant allows it. Roles rank viewer < operator < admin <",
        "owner. Refused acts are written to the tenant's audit log (outcome `refused`).",
        "",
        "| permission | direct grant | grant via MSP | allows |",
        "|---|---|---|---|",
    ]
    for perm, rule in TABLE.items():
        lines.append(
            f"| `{perm.value}` | {_least(rule.direct)} | {_least(rule.via_msp)} | {rule.why} |"
        )
    lines += ["", "## Mutations", "", "| mutation | needs |", "|---|---|"]
    for name, perms in sorted(mutations.items()):
        lines.append(f"| `{name}` | {', '.join(f'`{p.value}`' for p in perms)} |")
    return "\n".join(lines) + "\n"


def _least(role: Role | None) -> str:
    if role is None:
        return "never"
    return role.value if role is Role.OWNER else f"{role.value} or above"
