"""GraphQL types: thin views of domain rows, exposing chosen fields only (never every column)."""

import base64
import uuid
from datetime import datetime
from typing import Annotated, Generic, TypeVar, cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from dockyard.cloud.domain import errors
from dockyard.cloud.store import models as m

from .context import Context

T = TypeVar("T")


# --- expected errors, as results ------------------------------------------------------------


@strawberry.type
class NotFoundError:
    message: str


@strawberry.type
class ForbiddenError:
    message: str


@strawberry.type
class InvalidInputError:
    message: str


@strawberry.type
class ConflictError:
    message: str


Problem = NotFoundError | ForbiddenError | InvalidInputError | ConflictError


def as_problem(e: errors.DomainError) -> Problem:
    if isinstance(e, errors.NotFound):
        return NotFoundError(message=e.message)
    if isinstance(e, errors.Forbidden | errors.FlowModeForbids | errors.Unauthenticated):
        return ForbiddenError(message=e.message)
    if isinstance(e, errors.Conflict):
        return ConflictError(message=e.message)
    return InvalidInputError(message=e.message)


# --- pagination -----------------------------------------------------------------------------


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo


def encode_cursor(at: datetime, row_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{row_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        at, _, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(at), uuid.UUID(row_id)
    except (ValueError, UnicodeDecodeError):
        raise errors.Invalid("that cursor is not one this API gave out") from None


# --- the types ------------------------------------------------------------------------------


@strawberry.type
class Site:
    id: strawberry.ID
    tenant_id: strawberry.ID
    name: str
    max_flow: str | None

    @classmethod
    def of(cls, row: m.Site) -> "Site":
        return cls(
            id=strawberry.ID(str(row.id)),
            tenant_id=strawberry.ID(str(row.tenant_id)),
            name=row.name,
            max_flow=row.max_flow,
        )


@strawberry.type
class Tenant:
    id: strawberry.ID
    parent_id: strawberry.ID | None
    name: str
    kind: str
    flow_mode: str
    plan: str
    created_at: datetime
    archived_at: datetime | None

    @classmethod
    def of(cls, row: m.Tenant) -> "Tenant":
        return cls(
            id=strawberry.ID(str(row.id)),
            parent_id=strawberry.ID(str(row.parent_id)) if row.parent_id else None,
            name=row.name,
            kind=row.kind,
            flow_mode=row.flow_mode,
            plan=row.plan,
            created_at=row.created_at,
            archived_at=row.archived_at,
        )


@strawberry.type
class ModuleInfo:
    name: str
    version: str
    standalone_features: list[str]


@strawberry.type
class Agent:
    id: strawberry.ID
    tenant_id: strawberry.ID
    site_id: strawberry.ID
    name: str
    max_flow: str
    last_seq: int
    acked_seq: int
    enrolled_at: datetime
    last_seen_at: datetime | None
    clock_skew_s: int | None
    """Seconds the agent's clock runs ahead of the cloud's (negative: behind), as it last
    measured and reported; notices and deadlines follow the cloud's clock regardless."""
    revoked_at: datetime | None
    possible_duplicate_of: list[strawberry.ID]
    modules: list[ModuleInfo]

    @strawberry.field
    async def site(self, info: Info[Context, None]) -> Site | None:
        row = await info.context.loader(m.Site).load(uuid.UUID(self.site_id))
        return Site.of(row) if row else None

    @strawberry.field
    async def tenant(self, info: Info[Context, None]) -> Tenant | None:
        row = await info.context.loader(m.Tenant).load(uuid.UUID(self.tenant_id))
        return Tenant.of(row) if row else None

    @classmethod
    def of(cls, row: m.Agent) -> "Agent":
        return cls(
            id=strawberry.ID(str(row.id)),
            tenant_id=strawberry.ID(str(row.tenant_id)),
            site_id=strawberry.ID(str(row.site_id)),
            name=row.name,
            max_flow=row.max_flow,
            last_seq=row.last_seq,
            acked_seq=row.acked_seq,
            enrolled_at=row.enrolled_at,
            last_seen_at=row.last_seen_at,
            clock_skew_s=row.clock_skew_s,
            revoked_at=row.revoked_at,
            possible_duplicate_of=[strawberry.ID(d) for d in row.possible_duplicate_of],
            modules=[
                ModuleInfo(
                    name=x["name"],
                    version=x["version"],
                    standalone_features=list(x.get("standalone_features", [])),
                )
                for x in row.modules
            ],
        )


@strawberry.type
class EnrolmentToken:
    id: strawberry.ID
    tenant_id: strawberry.ID
    site_id: strawberry.ID
    max_flow: str
    note: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    used_by_agent_id: strawberry.ID | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: m.EnrolmentToken) -> "EnrolmentToken":
        return cls(
            id=strawberry.ID(str(row.id)),
            tenant_id=strawberry.ID(str(row.tenant_id)),
            site_id=strawberry.ID(str(row.site_id)),
            max_flow=row.max_flow,
            note=row.note,
            created_at=row.created_at,
            expires_at=row.expires_at,
            used_at=row.used_at,
            used_by_agent_id=strawberry.ID(str(row.used_by_agent_id))
            if row.used_by_agent_id
            else None,
            revoked_at=row.revoked_at,
        )


@strawberry.type
class EnrolmentTokenCreated:
    token: EnrolmentToken
    secret: str = strawberry.field(description="Shown once; only its hash is kept.")


@strawberry.type
class PolicyVersion:
    version: int
    document: JSON
    created_at: datetime

    @classmethod
    def of(cls, row: m.PolicyVersion) -> "PolicyVersion":
        return cls(
            version=row.version, document=cast(JSON, row.document), created_at=row.created_at
        )


@strawberry.type
class Policy:
    id: strawberry.ID
    tenant_id: strawberry.ID
    name: str
    kind: str
    current_version: int
    created_at: datetime

    @classmethod
    def of(cls, row: m.Policy) -> "Policy":
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
    target_kind: str
    target_id: strawberry.ID


@strawberry.type
class JobEvent:
    kind: str
    at: datetime
    progress: float | None
    code: str | None
    counts: JSON
    detail: str | None

    @classmethod
    def of(cls, row: m.JobEvent) -> "JobEvent":
        return cls(
            kind=row.kind,
            at=row.at,
            progress=row.progress,
            code=row.code,
            counts=cast(JSON, row.counts),
            detail=row.detail,
        )


@strawberry.type
class Job:
    id: strawberry.ID
    tenant_id: strawberry.ID
    agent_id: strawberry.ID
    command_id: strawberry.ID | None
    kind: str
    state: str
    progress: float | None
    result_code: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: m.Job) -> "Job":
        return cls(
            id=strawberry.ID(str(row.id)),
            tenant_id=strawberry.ID(str(row.tenant_id)),
            agent_id=strawberry.ID(str(row.agent_id)),
            command_id=strawberry.ID(str(row.command_id)) if row.command_id else None,
            kind=row.kind,
            state=row.state,
            progress=row.progress,
            result_code=row.result_code,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@strawberry.type
class Command:
    id: strawberry.ID
    tenant_id: strawberry.ID
    agent_id: strawberry.ID
    job_id: strawberry.ID
    seq: int
    name: str
    args: JSON
    state: str
    idempotency_key: str | None
    issued_at: datetime
    expires_at: datetime
    sent_at: datetime | None
    acked_at: datetime | None
    finished_at: datetime | None
    result_code: str | None

    @strawberry.field
    async def job(self, info: Info[Context, None]) -> Job | None:
        row = await info.context.loader(m.Job).load(uuid.UUID(self.job_id))
        return Job.of(row) if row else None

    @classmethod
    def of(cls, row: m.Command) -> "Command":
        return cls(
            id=strawberry.ID(str(row.id)),
            tenant_id=strawberry.ID(str(row.tenant_id)),
            agent_id=strawberry.ID(str(row.agent_id)),
            job_id=strawberry.ID(str(row.job_id)),
            seq=row.seq,
            name=row.name,
            args=cast(JSON, row.args),
            state=row.state,
            idempotency_key=row.idempotency_key,
            issued_at=row.issued_at,
            expires_at=row.expires_at,
            sent_at=row.sent_at,
            acked_at=row.acked_at,
            finished_at=row.finished_at,
            result_code=row.result_code,
        )


@strawberry.type
class AuditRecord:
    id: strawberry.ID
    tenant_id: strawberry.ID
    at: datetime
    actor_kind: str
    actor_id: strawberry.ID | None
    action: str
    target: str | None
    outcome: str
    detail: JSON

    @classmethod
    def of(cls, row: m.AuditRecord) -> "AuditRecord":
        return cls(
            id=strawberry.ID(str(row.id)),
            tenant_id=strawberry.ID(str(row.tenant_id)),
            at=row.at,
            actor_kind=row.actor_kind,
            actor_id=strawberry.ID(str(row.actor_id)) if row.actor_id else None,
            action=row.action,
            target=row.target,
            outcome=row.outcome,
            detail=cast(JSON, row.detail),
        )


@strawberry.type
class SiteList:
    items: list[Site]


@strawberry.type
class EnrolmentTokenList:
    items: list[EnrolmentToken]


@strawberry.type
class CommandList:
    items: list[Command]


@strawberry.type
class PolicyList:
    items: list[Policy]


@strawberry.type
class PolicyVersionList:
    items: list[PolicyVersion]


@strawberry.type
class JobDetail:
    job: Job
    events: list[JobEvent]


@strawberry.type
class Membership:
    """One grant: `via` is "direct" (a membership of the tenant itself) or "msp" (a
    membership of its MSP); a tenant may have one of each, with different roles."""

    tenant_id: strawberry.ID
    role: str
    via: str


@strawberry.type
class Me:
    id: strawberry.ID
    email: str
    name: str
    memberships: list[Membership]


# --- results: a success type or one of the expected errors -----------------------------


@strawberry.type
class VmSighting:
    """One agent's view of a VM: the address every command uses."""

    id: strawberry.ID
    agent_id: strawberry.ID
    endpoint: str
    native_id: str
    name: str
    power_state: str
    host: str | None
    owner: str | None
    idle_state: str
    last_active_at: datetime | None
    seen_at: datetime
    pinned: bool
    identifiers: JSON
    possible_clone: bool
    """This sighting shares its BIOS UUID with a sighting of another VM: a clone, or a copy
    registered twice. They stay separate VMs; a command reaches only the one it names."""
    possible_clone_of: list[strawberry.ID]
    """Those other sightings' ids."""

    @classmethod
    def of(cls, row: m.VmSighting, clones: list[uuid.UUID] | None = None) -> "VmSighting":
        return cls(
            id=strawberry.ID(str(row.id)),
            agent_id=strawberry.ID(str(row.agent_id)),
            endpoint=row.endpoint,
            native_id=row.native_id,
            name=row.name,
            power_state=row.power_state,
            host=row.host,
            owner=row.owner,
            idle_state=row.idle_state,
            last_active_at=row.last_active_at,
            seen_at=row.seen_at,
            pinned=row.pinned,
            identifiers=cast(JSON, row.identifiers),
            possible_clone=bool(clones),
            possible_clone_of=[strawberry.ID(str(c)) for c in clones or []],
        )


@strawberry.type
class Vm:
    """A VM of the tenant's catalog, merged from its sightings (for display and reports)."""

    id: strawberry.ID
    name: str
    conflict: str | None
    sightings: list[VmSighting]


@strawberry.type
class VmList:
    items: list[Vm]


@strawberry.type
class VmDecision:
    """An idle VM's proposal and what became of it: notice, answer, command."""

    id: strawberry.ID
    agent_id: strawberry.ID
    endpoint: str
    native_id: str
    vm_name: str | None
    state: str
    action: str | None
    owner: str | None
    reasons: list[str]
    window_start: datetime
    window_end: datetime
    status: str
    received_at: datetime
    notice_sent_at: datetime | None
    due_at: datetime | None
    answer: str | None
    answered_at: datetime | None
    command_id: strawberry.ID | None
    error: str | None

    @classmethod
    def of(cls, row: m.VmDecision) -> "VmDecision":
        return cls(
            id=strawberry.ID(str(row.id)),
            agent_id=strawberry.ID(str(row.agent_id)),
            endpoint=row.endpoint,
            native_id=row.native_id,
            vm_name=row.vm_name,
            state=row.state,
            action=row.action,
            owner=row.owner,
            reasons=[str(r) for r in row.reasons],
            window_start=row.window_start,
            window_end=row.window_end,
            status=row.status,
            received_at=row.received_at,
            notice_sent_at=row.notice_sent_at,
            due_at=row.due_at,
            answer=row.answer,
            answered_at=row.answered_at,
            command_id=strawberry.ID(str(row.command_id)) if row.command_id else None,
            error=row.error,
        )


@strawberry.type
class VmDecisionList:
    items: list[VmDecision]


@strawberry.type
class VmApproval:
    """Actions let past an agent's budget: the `vm.approve` command, and the held decisions
    let go again."""

    command_id: strawberry.ID
    released: int


TenantResult = Annotated[Tenant | Problem, strawberry.union("TenantResult")]
SitesResult = Annotated[SiteList | Problem, strawberry.union("SitesResult")]
AgentsResult = Annotated[Connection[Agent] | Problem, strawberry.union("AgentsResult")]
AgentResult = Annotated[Agent | Problem, strawberry.union("AgentResult")]
EnrolmentTokensResult = Annotated[
    EnrolmentTokenList | Problem, strawberry.union("EnrolmentTokensResult")
]
PoliciesResult = Annotated[PolicyList | Problem, strawberry.union("PoliciesResult")]
PolicyVersionsResult = Annotated[
    PolicyVersionList | Problem, strawberry.union("PolicyVersionsResult")
]
CommandsResult = Annotated[Connection[Command] | Problem, strawberry.union("CommandsResult")]
CommandResult = Annotated[Command | Problem, strawberry.union("CommandResult")]
JobsResult = Annotated[Connection[Job] | Problem, strawberry.union("JobsResult")]
JobResult = Annotated[JobDetail | Problem, strawberry.union("JobResult")]
AuditLogResult = Annotated[Connection[AuditRecord] | Problem, strawberry.union("AuditLogResult")]
CreateTenantResult = Annotated[Tenant | Problem, strawberry.union("CreateTenantResult")]
RenameTenantResult = Annotated[Tenant | Problem, strawberry.union("RenameTenantResult")]
ArchiveTenantResult = Annotated[Tenant | Problem, strawberry.union("ArchiveTenantResult")]
SetFlowModeResult = Annotated[Tenant | Problem, strawberry.union("SetFlowModeResult")]
SetPlanResult = Annotated[Tenant | Problem, strawberry.union("SetPlanResult")]
CreateSiteResult = Annotated[Site | Problem, strawberry.union("CreateSiteResult")]
CreateEnrolmentTokenResult = Annotated[
    EnrolmentTokenCreated | Problem, strawberry.union("CreateEnrolmentTokenResult")
]
RevokeEnrolmentTokenResult = Annotated[
    EnrolmentToken | Problem, strawberry.union("RevokeEnrolmentTokenResult")
]
RevokeAgentResult = Annotated[Agent | Problem, strawberry.union("RevokeAgentResult")]
CreatePolicyResult = Annotated[Policy | Problem, strawberry.union("CreatePolicyResult")]
NewPolicyVersionResult = Annotated[
    PolicyVersion | Problem, strawberry.union("NewPolicyVersionResult")
]
AssignPolicyResult = Annotated[PolicyAssignment | Problem, strawberry.union("AssignPolicyResult")]
IssueCommandResult = Annotated[Command | Problem, strawberry.union("IssueCommandResult")]
IssueCommandsResult = Annotated[CommandList | Problem, strawberry.union("IssueCommandsResult")]
VmsResult = Annotated[VmList | Problem, strawberry.union("VmsResult")]
VmDecisionsResult = Annotated[VmDecisionList | Problem, strawberry.union("VmDecisionsResult")]
ApproveVmActionsResult = Annotated[VmApproval | Problem, strawberry.union("ApproveVmActionsResult")]
PowerVmResult = Annotated[Command | Problem, strawberry.union("PowerVmResult")]
SplitVmSightingResult = Annotated[VmSighting | Problem, strawberry.union("SplitVmSightingResult")]
