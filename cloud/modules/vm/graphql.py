"""The VM catalog, idle decisions and VM actions: the types, queries and mutations."""

import enum
from datetime import datetime
from typing import Annotated, cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from dockyard.agent.protocol import links
from dockyard.agent.protocol.notices import DecisionState
from dockyard.agent.protocol.vm import IdleState, PowerAction
from dockyard.cloud.api.graphql import relay
from dockyard.cloud.api.graphql.commands import Command
from dockyard.cloud.api.graphql.context import Context
from dockyard.cloud.api.graphql.errors import (
    AgentNotFound,
    AgentRevoked,
    InvalidInput,
    PermissionDenied,
    TenantArchived,
    TenantNotFound,
    VmSightingNotFound,
)
from dockyard.cloud.api.graphql.fields import mutation, parse_id, query
from dockyard.cloud.domain import rows as r
from dockyard.cloud.domain.permissions import Permission as P

from . import catalog, notices

strawberry.enum(PowerAction, description="What a power command does to a VM.")
strawberry.enum(IdleState, description="What the agent's idleness rule found.")


# The decision states both sides of a notice follow (agent/protocol/notices.py).
strawberry.enum(
    DecisionState,
    name="DecisionStatus",
    description="Where an idle VM's proposal is: notice, answer, command.",
)


@strawberry.enum(description="The owner's answer to a notice.")
class NoticeAnswer(enum.Enum):
    SKIP = "skip"
    DELAY = "delay"


assert {a.value for a in NoticeAnswer} == set(links.ANSWERS)


@strawberry.type
class VmSighting:
    """One agent's view of a VM: the address every command uses."""

    id: strawberry.ID
    agent_id: strawberry.ID
    endpoint: str
    native_id: str
    name: str
    power_state: str = strawberry.field(description="As the hypervisor's driver reports it.")
    host: str | None
    owner: str | None
    idle_state: IdleState
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
    def of(cls, row: r.VmSighting, clones: list[object] | None = None) -> "VmSighting":
        return cls(
            id=strawberry.ID(str(row.id)),
            agent_id=strawberry.ID(str(row.agent_id)),
            endpoint=row.endpoint,
            native_id=row.native_id,
            name=row.name,
            power_state=row.power_state,
            host=row.host,
            owner=row.owner,
            idle_state=IdleState(row.idle_state),
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
    sightings: list[VmSighting] = strawberry.field(
        description="Every agent's view of this VM (a few at most), oldest sighting first."
    )

    @classmethod
    def of(cls, entry: catalog.CatalogEntry) -> "Vm":
        return cls(
            id=strawberry.ID(str(entry.vm.id)),
            name=entry.vm.name,
            conflict=entry.vm.conflict,
            sightings=[VmSighting.of(s, list(entry.clones.get(s.id, []))) for s in entry.sightings],
        )


@strawberry.type
class VmDecision:
    """An idle VM's proposal and what became of it: notice, answer, command."""

    id: strawberry.ID
    agent_id: strawberry.ID
    endpoint: str
    native_id: str
    vm_name: str | None
    state: IdleState
    action: PowerAction | None
    owner: str | None
    reasons: list[str]
    window_start: datetime
    window_end: datetime
    status: DecisionState
    received_at: datetime
    notice_sent_at: datetime | None
    due_at: datetime | None
    answer: NoticeAnswer | None
    answered_at: datetime | None
    command_id: strawberry.ID | None
    error: str | None

    @classmethod
    def of(cls, row: r.VmDecision) -> "VmDecision":
        return cls(
            id=strawberry.ID(str(row.id)),
            agent_id=strawberry.ID(str(row.agent_id)),
            endpoint=row.endpoint,
            native_id=row.native_id,
            vm_name=row.vm_name,
            state=IdleState(row.state),
            action=PowerAction(row.action) if row.action else None,
            owner=row.owner,
            reasons=[str(x) for x in row.reasons],
            window_start=row.window_start,
            window_end=row.window_end,
            status=DecisionState(row.status),
            received_at=row.received_at,
            notice_sent_at=row.notice_sent_at,
            due_at=row.due_at,
            answer=NoticeAnswer(row.answer) if row.answer else None,
            answered_at=row.answered_at,
            command_id=strawberry.ID(str(row.command_id)) if row.command_id else None,
            error=row.error,
        )


@strawberry.type
class VmApproval:
    """Actions let past an agent's budget: the `vm.approve` command, and the held decisions
    let go again."""

    command_id: strawberry.ID
    released: int


VmConnection = relay.Connection[Vm]
VmDecisionConnection = relay.Connection[VmDecision]

VmsResult = Annotated[
    VmConnection | TenantNotFound | PermissionDenied | InvalidInput,
    strawberry.union("VmsResult"),
]
VmDecisionsResult = Annotated[
    VmDecisionConnection | TenantNotFound | PermissionDenied | InvalidInput,
    strawberry.union("VmDecisionsResult"),
]
PowerVmResult = Annotated[
    Command
    | VmSightingNotFound
    | AgentNotFound
    | AgentRevoked
    | PermissionDenied
    | TenantArchived
    | InvalidInput,
    strawberry.union("PowerVmResult"),
]
ApproveVmActionsResult = Annotated[
    VmApproval | AgentNotFound | AgentRevoked | PermissionDenied | TenantArchived | InvalidInput,
    strawberry.union("ApproveVmActionsResult"),
]
SplitVmSightingResult = Annotated[
    VmSighting | VmSightingNotFound | PermissionDenied | TenantArchived | InvalidInput,
    strawberry.union("SplitVmSightingResult"),
]


@strawberry.type
class VmQuery:
    @query(VmsResult)
    async def vms(
        self,
        info: Info[Context, None],
        tenant_id: strawberry.ID,
        power_state: str | None = None,
        host: str | None = None,
        owner: str | None = None,
        idle_state: IdleState | None = None,
        first: int = relay.FIRST,
        after: str | None = None,
    ) -> VmConnection:
        """The tenant's VM catalog by name; each filter matches any of a VM's sightings."""
        tid = parse_id(tenant_id, "tenantId")
        page = await info.context.read(
            lambda ctx: catalog.catalog(
                ctx,
                tid,
                power_state=power_state,
                host=host,
                owner=owner,
                idle_state=idle_state.value if idle_state is not None else None,
                request=relay.request(first, after),
            )
        )
        return relay.connection(page, Vm.of, after)

    @query(VmDecisionsResult)
    async def vm_decisions(
        self,
        info: Info[Context, None],
        tenant_id: strawberry.ID,
        status: DecisionState | None = None,
        first: int = relay.FIRST,
        after: str | None = None,
    ) -> VmDecisionConnection:
        """Idle VMs proposed by docked agents, newest first, with their reasons, notices
        and answers."""
        tid = parse_id(tenant_id, "tenantId")
        wanted = status.value if status is not None else None
        page = await info.context.read(
            lambda ctx: catalog.decisions(ctx, tid, relay.request(first, after), status=wanted)
        )
        return relay.connection(page, VmDecision.of, after)


@strawberry.type
class VmMutation:
    @mutation(PowerVmResult, P.VM_POWER)
    async def power_vm(
        self, info: Info[Context, None], sighting_id: strawberry.ID, action: PowerAction
    ) -> Command:
        """Shut down, power off, suspend or start a VM now, through the agent that sees it
        (its never-act list and the exclusion tag still apply there)."""
        sid = parse_id(sighting_id, "sightingId")
        row = await info.context.write(lambda ctx: catalog.power(ctx, sid, action.value))
        return Command.of(row)

    @mutation(ApproveVmActionsResult, P.VM_POWER)
    async def approve_vm_actions(
        self, info: Info[Context, None], agent_id: strawberry.ID, count: int
    ) -> VmApproval:
        """Let `count` more actions go past the agent's budget in this window; its held
        decisions go ahead, oldest first. The agent's own cap is not raised."""
        aid = parse_id(agent_id, "agentId")
        command_id, released = await info.context.write(
            lambda ctx: notices.approve(ctx, aid, count)
        )
        return VmApproval(command_id=strawberry.ID(str(command_id)), released=released)

    @mutation(SplitVmSightingResult, P.VM_SPLIT)
    async def split_vm_sighting(
        self, info: Info[Context, None], sighting_id: strawberry.ID
    ) -> VmSighting:
        """Undo a merge: the sighting becomes a VM of its own and is never merged again."""
        sid = parse_id(sighting_id, "sightingId")
        return VmSighting.of(await info.context.write(lambda ctx: catalog.split(ctx, sid)))


# What the schema merges (`cloud/api/graphql/schema.py`, through the module's registry entry).
Query = VmQuery
Mutation = VmMutation
