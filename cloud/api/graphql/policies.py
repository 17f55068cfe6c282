"""Policies, their versions and assignments: the types, queries and mutations."""

import enum
from datetime import datetime
from typing import Annotated, cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from dockyard.cloud.domain import policies, text
from dockyard.cloud.domain import rows as r
from dockyard.cloud.domain.permissions import Permission as P

from . import relay
from .context import Context
from .errors import (
    AgentNotFound,
    InvalidInput,
    NameTaken,
    PermissionDenied,
    PolicyAssignmentNotFound,
    PolicyNotFound,
    SiteNotFound,
    TenantArchived,
    TenantNotFound,
)
from .fields import json_object, mutation, parse_id, query


@strawberry.enum(description="What a policy is assigned to.")
class PolicyTarget(enum.Enum):
    TENANT = "tenant"
    SITE = "site"
    AGENT = "agent"


assert {t.value for t in PolicyTarget} == set(policies.TARGET_KINDS)


@strawberry.type
class PolicyVersion:
    version: int
    document: JSON
    created_at: datetime

    @classmethod
    def of(cls, row: r.PolicyVersion) -> "PolicyVersion":
        return cls(
            version=row.version, document=cast(JSON, row.document), created_at=row.created_at
        )


@strawberry.type
class Policy:
    id: strawberry.ID
    tenant_id: strawberry.ID
    name: str
    kind: str = strawberry.field(
        description="The module's policy kind (`noop`, `vm-lifecycle`): an open set, since "
        "each module registers its own."
    )
    current_version: int
    created_at: datetime

    @classmethod
    def of(cls, row: r.Policy) -> "Policy":
        return cls(
            id=strawberry.ID(str(row.id)),
            tenant_id=strawberry.ID(str(row.tenant_id)),
            name=row.name,
            kind=row.kind,
            current_version=row.current_version,
            created_at=row.created_at,
        )


@strawberry.type
class PolicyAssignment:
    id: strawberry.ID
    policy_id: strawberry.ID
    target_kind: PolicyTarget
    target_id: strawberry.ID

    @classmethod
    def of(cls, row: r.PolicyAssignment) -> "PolicyAssignment":
        return cls(
            id=strawberry.ID(str(row.id)),
            policy_id=strawberry.ID(str(row.policy_id)),
            target_kind=PolicyTarget(row.target_kind),
            target_id=strawberry.ID(str(row.target_id)),
        )


PolicyConnection = relay.Connection[Policy]
PolicyVersionConnection = relay.Connection[PolicyVersion]
PolicyAssignmentConnection = relay.Connection[PolicyAssignment]

PolicyResult = Annotated[
    Policy | PolicyNotFound | PermissionDenied | InvalidInput,
    strawberry.union("PolicyResult"),
]
PolicyAssignmentsResult = Annotated[
    PolicyAssignmentConnection | PolicyNotFound | PermissionDenied | InvalidInput,
    strawberry.union("PolicyAssignmentsResult"),
]

PoliciesResult = Annotated[
    PolicyConnection | TenantNotFound | PermissionDenied | InvalidInput,
    strawberry.union("PoliciesResult"),
]
PolicyVersionsResult = Annotated[
    PolicyVersionConnection | PolicyNotFound | PermissionDenied | InvalidInput,
    strawberry.union("PolicyVersionsResult"),
]
CreatePolicyResult = Annotated[
    Policy | TenantNotFound | PermissionDenied | TenantArchived | NameTaken | InvalidInput,
    strawberry.union("CreatePolicyResult"),
]
NewPolicyVersionResult = Annotated[
    PolicyVersion | PolicyNotFound | PermissionDenied | TenantArchived | InvalidInput,
    strawberry.union("NewPolicyVersionResult"),
]
AssignPolicyResult = Annotated[
    PolicyAssignment
    | PolicyNotFound
    | TenantNotFound
    | SiteNotFound
    | AgentNotFound
    | PermissionDenied
    | TenantArchived
    | InvalidInput,
    strawberry.union("AssignPolicyResult"),
]
UnassignPolicyResult = Annotated[
    PolicyAssignment
    | PolicyNotFound
    | PolicyAssignmentNotFound
    | PermissionDenied
    | TenantArchived
    | InvalidInput,
    strawberry.union("UnassignPolicyResult"),
]


@strawberry.type
class PolicyQuery:
    @query(PoliciesResult)
    async def policies(
        self,
        info: Info[Context, None],
        tenant_id: strawberry.ID,
        first: int = relay.FIRST,
        after: str | None = None,
    ) -> PolicyConnection:
        tid = parse_id(tenant_id, "tenantId")
        page = await info.context.read(
            lambda ctx: policies.listing(ctx, tid, relay.request(first, after))
        )
        return relay.connection(page, Policy.of, after)

    @query(PolicyResult)
    async def policy(self, info: Info[Context, None], id: strawberry.ID) -> Policy:
        pid = parse_id(id, "id")
        return Policy.of(await info.context.read(lambda ctx: policies.get(ctx, pid)))

    @query(PolicyAssignmentsResult)
    async def policy_assignments(
        self,
        info: Info[Context, None],
        policy_id: strawberry.ID,
        first: int = relay.FIRST,
        after: str | None = None,
    ) -> PolicyAssignmentConnection:
        """Where the policy is assigned (the tenant, sites, agents), oldest first."""
        pid = parse_id(policy_id, "policyId")
        page = await info.context.read(
            lambda ctx: policies.assignments(ctx, pid, relay.request(first, after))
        )
        return relay.connection(page, PolicyAssignment.of, after)

    @query(PolicyVersionsResult)
    async def policy_versions(
        self,
        info: Info[Context, None],
        policy_id: strawberry.ID,
        first: int = relay.FIRST,
        after: str | None = None,
    ) -> PolicyVersionConnection:
        pid = parse_id(policy_id, "policyId")
        page = await info.context.read(
            lambda ctx: policies.versions(ctx, pid, relay.request(first, after))
        )
        return relay.connection(page, PolicyVersion.of, after)


@strawberry.type
class PolicyMutation:
    @mutation(CreatePolicyResult, P.POLICY_WRITE)
    async def create_policy(
        self,
        info: Info[Context, None],
        tenant_id: strawberry.ID,
        name: str,
        kind: str,
        document: JSON,
    ) -> Policy:
        tid = parse_id(tenant_id, "tenantId")
        doc = json_object(document, "a policy document is a JSON object")
        name = text.plain("name", name)  # a NUL would reach the name's column
        row = await info.context.write(lambda ctx: policies.create(ctx, tid, name, kind, doc))
        return Policy.of(row)

    @mutation(NewPolicyVersionResult, P.POLICY_WRITE)
    async def new_policy_version(
        self, info: Info[Context, None], policy_id: strawberry.ID, document: JSON
    ) -> PolicyVersion:
        pid = parse_id(policy_id, "policyId")
        doc = json_object(document, "a policy document is a JSON object")
        row = await info.context.write(lambda ctx: policies.new_version(ctx, pid, doc))
        return PolicyVersion.of(row)

    @mutation(AssignPolicyResult, P.POLICY_ASSIGN)
    async def assign_policy(
        self,
        info: Info[Context, None],
        policy_id: strawberry.ID,
        target_kind: PolicyTarget,
        target_id: strawberry.ID,
    ) -> PolicyAssignment:
        pid, target = parse_id(policy_id, "policyId"), parse_id(target_id, "targetId")
        row = await info.context.write(
            lambda ctx: policies.assign(ctx, pid, target_kind.value, target)
        )
        return PolicyAssignment.of(row)

    @mutation(UnassignPolicyResult, P.POLICY_ASSIGN)
    async def unassign_policy(
        self,
        info: Info[Context, None],
        policy_id: strawberry.ID,
        target_kind: PolicyTarget,
        target_id: strawberry.ID,
    ) -> PolicyAssignment:
        """Ends an assignment; agents it alone reached are told the policy no longer applies.
        Answers the assignment as it was."""
        pid, target = parse_id(policy_id, "policyId"), parse_id(target_id, "targetId")
        row = await info.context.write(
            lambda ctx: policies.unassign(ctx, pid, target_kind.value, target)
        )
        return PolicyAssignment.of(row)
