"""The VM catalog, idle decisions and VM actions: the types, queries and mutations."""

import enum
from datetime import datetime
from typing import Annotated, cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from dockyard.agent.protocol import links
from dockyard.agent.protocol.notices import DecisionState
from dockyard.agent.protocol.vm import Idleness, IdleState, LifeState, PowerAction
from dockyard.cloud.api.graphql import errors, relay
from dockyard.cloud.api.graphql.commands import Command
from dockyard.cloud.api.graphql.context import Context
from dockyard.cloud.api.graphql.errors import (
    AgentNotFound,
    AgentRevoked,
    Error,
    InvalidInput,
    PermissionDenied,
    TenantArchived,
    TenantNotFound,
    VmSightingNotFound,
)
from dockyard.cloud.api.graphql.fields import mutation, parse_id, query
from dockyard.cloud.api.graphql.module_parts import DashboardRoot
from dockyard.cloud.domain import rows as r
from dockyard.cloud.domain.errors import NotFound
from dockyard.cloud.domain.permissions import Permission as P

from . import archive, catalog, dashboard, notices

strawberry.enum(PowerAction, description="What a power command does to a VM.")
strawberry.enum(IdleState, description="What the agent's idleness rule found.")
strawberry.enum(
    LifeState,
    name="VmLifeState",
    description="Where a VM is in the module's loop: running to archived and back.",
)


@strawberry.type(description="No such VM in the catalog, or another tenant's.")
class VmNotFound(Error):
    pass


@strawberry.type(description="The tenant's plan does not unlock this feature.")
class FeatureLocked(Error):
    pass


@strawberry.type(description="The VM's life state does not allow it; the message says which do.")
class VmLifeStateForbids(Error):
    pass


@strawberry.type(description="A restore of this VM is running already.")
class VmRestoreRunning(Error):
    pass


errors.MATCHES.update(
    {
        VmNotFound: lambda err: isinstance(err, NotFound) and err.what == "vm",
        FeatureLocked: lambda err: isinstance(err, archive.FeatureLocked),
        VmLifeStateForbids: lambda err: isinstance(err, archive.LifeStateForbids),
        VmRestoreRunning: lambda err: isinstance(err, archive.RestoreRunning),
    }
)


@strawberry.type
class VmArchive:
    """An archived VM's figures, as its agent reports them."""

    archived_at: datetime
    snapshot: str
    size_before: float = strawberry.field(description="Bytes on the datastore before archiving.")
    stored_bytes: float = strawberry.field(
        description="Bytes the archive added to the repository, after dedup and compression."
    )
    restore_count: int
    restored_at: datetime | None
    restored_from: str | None = strawberry.field(
        description="The native id the VM was archived under, where its restore gave it a "
        "new one (an EC2 instance comes back under a new instance id); that sighting is in "
        "the same catalog VM."
    )

    @classmethod
    def of(cls, row: r.VmSighting) -> "VmArchive | None":
        if row.archived_at is None or row.archive_snapshot is None:
            return None
        archive = (row.record or {}).get("archive") or {}
        return cls(
            archived_at=row.archived_at,
            snapshot=row.archive_snapshot,
            size_before=float(row.size_before or 0),
            stored_bytes=float(row.stored_bytes or 0),
            restore_count=row.restore_count or 0,
            restored_at=row.restored_at,
            restored_from=str(archive["restored_from"]) if archive.get("restored_from") else None,
        )


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
    life_state: LifeState
    life_reason: str | None
    archive: VmArchive | None

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
            life_state=LifeState(row.life_state),
            life_reason=row.life_reason,
            archive=VmArchive.of(row),
        )


@strawberry.type(description="A signal and a figure in its threshold's unit.")
class VmSignalFigure:
    signal: str = strawberry.field(description="`cpu` (%), `disk`, `net` (KB/s), `apps`.")
    value: float


@strawberry.type(description="One UTC day of the first period, as the idleness rule judged it.")
class VmActivityDay:
    day: datetime = strawberry.field(description="The day's start, 00:00 UTC.")
    figures: list[VmSignalFigure] = strawberry.field(
        description="Each signal's figure that day (the policy's statistic: peak unless it "
        "names a percentile); a signal without samples that day is absent."
    )


@strawberry.type(description="The agent's last judgement of the VM's idleness, and why.")
class VmIdleness:
    state: IdleState
    at: datetime = strawberry.field(description="When the agent judged.")
    window_start: datetime
    window_end: datetime
    reasons: list[str]
    thresholds: list[VmSignalFigure] = strawberry.field(
        description="What each signal's figure must stay under, every day, for the VM to be idle."
    )
    days: list[VmActivityDay] = strawberry.field(
        description="The judged days with samples, oldest first (120 at most)."
    )

    @classmethod
    def of(cls, record: dict[str, object] | None) -> "VmIdleness | None":
        """From a sighting's stored record; None where the agent sent none (before its first
        evaluation, or an agent older than the field)."""
        raw = (record or {}).get("idleness")
        if not isinstance(raw, dict):
            return None
        try:
            got = Idleness.model_validate(raw)
        except ValueError:
            return (
                None  # validated when it came in; a record that no longer parses is shown without
            )
        return cls(
            state=got.state,
            at=got.at,
            window_start=got.window_start,
            window_end=got.window_end,
            reasons=list(got.reasons),
            thresholds=[VmSignalFigure(signal=k, value=v) for k, v in got.thresholds.items()],
            days=[
                VmActivityDay(
                    day=d.day,
                    figures=[VmSignalFigure(signal=k, value=v) for k, v in d.figures.items()],
                )
                for d in got.days
            ],
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
    life_state: LifeState = strawberry.field(description="As its newest sighting reports it.")
    life_reason: str | None = strawberry.field(description="Why it is in a failed state.")
    archive: VmArchive | None
    idleness: VmIdleness | None = strawberry.field(
        description="The newest sighting's judgement: its reasons and the days it judged by."
    )

    @classmethod
    def of(cls, entry: catalog.CatalogEntry) -> "Vm":
        sightings = [VmSighting.of(s, list(entry.clones.get(s.id, []))) for s in entry.sightings]
        newest = sightings[-1] if sightings else None
        return cls(
            idleness=VmIdleness.of(entry.sightings[-1].record) if entry.sightings else None,
            id=strawberry.ID(str(entry.vm.id)),
            name=entry.vm.name,
            conflict=entry.vm.conflict,
            sightings=sightings,
            life_state=newest.life_state if newest else LifeState.RUNNING,
            life_reason=newest.life_reason if newest else None,
            archive=newest.archive if newest else None,
        )


@strawberry.type
class ArchivedVm:
    """One archived VM, for the report."""

    vm_id: strawberry.ID
    sighting_id: strawberry.ID
    name: str
    endpoint: str
    archive: VmArchive

    @classmethod
    def of(cls, row: r.VmSighting) -> "ArchivedVm":
        figures = VmArchive.of(row)
        assert figures is not None  # the query reads archived rows only
        return cls(
            vm_id=strawberry.ID(str(row.vm_id)),
            sighting_id=strawberry.ID(str(row.id)),
            name=row.name,
            endpoint=row.endpoint,
            archive=figures,
        )


@strawberry.type
class VmArchiveTotals:
    vms_archived: int
    bytes_freed: float = strawberry.field(description="What the archived VMs took on datastores.")
    bytes_stored: float = strawberry.field(description="What their archives take in storage.")


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
ArchivedVmConnection = relay.Connection[ArchivedVm]
VmDecisionConnection = relay.Connection[VmDecision]

VmsResult = Annotated[
    VmConnection | TenantNotFound | PermissionDenied | InvalidInput,
    strawberry.union("VmsResult"),
]
VmResult = Annotated[
    Vm | VmNotFound | PermissionDenied | InvalidInput,
    strawberry.union("VmResult"),
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
ArchivedVmsResult = Annotated[
    ArchivedVmConnection | TenantNotFound | PermissionDenied | InvalidInput,
    strawberry.union("ArchivedVmsResult"),
]
VmArchiveTotalsResult = Annotated[
    VmArchiveTotals | TenantNotFound | PermissionDenied | InvalidInput,
    strawberry.union("VmArchiveTotalsResult"),
]
ArchiveVmResult = Annotated[
    Command
    | VmNotFound
    | FeatureLocked
    | VmLifeStateForbids
    | AgentNotFound
    | AgentRevoked
    | PermissionDenied
    | TenantArchived
    | InvalidInput,
    strawberry.union("ArchiveVmResult"),
]
RestoreVmResult = Annotated[
    Command
    | VmNotFound
    | FeatureLocked
    | VmRestoreRunning
    | VmLifeStateForbids
    | AgentNotFound
    | AgentRevoked
    | PermissionDenied
    | TenantArchived
    | InvalidInput,
    strawberry.union("RestoreVmResult"),
]
SplitVmSightingResult = Annotated[
    VmSighting | VmSightingNotFound | PermissionDenied | TenantArchived | InvalidInput,
    strawberry.union("SplitVmSightingResult"),
]


@strawberry.type
class VmQuery:
    @query(VmResult)
    async def vm(self, info: Info[Context, None], id: strawberry.ID) -> Vm:
        """One VM of the catalog: its sightings, life state and last idleness judgement."""
        vm_id = parse_id(id, "id")
        found = await info.context.read(lambda ctx: catalog.entry(ctx, vm_id))
        return Vm.of(found)

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

    @query(ArchivedVmsResult)
    async def archived_vms(
        self,
        info: Info[Context, None],
        tenant_id: strawberry.ID,
        first: int = relay.FIRST,
        after: str | None = None,
    ) -> ArchivedVmConnection:
        """The tenant's archived VMs, newest archive first, with their figures."""
        tid = parse_id(tenant_id, "tenantId")
        page = await info.context.read(
            lambda ctx: archive.archived(ctx, tid, relay.request(first, after))
        )
        return relay.connection(page, ArchivedVm.of, after)

    @query(VmArchiveTotalsResult)
    async def vm_archive_totals(
        self, info: Info[Context, None], tenant_id: strawberry.ID
    ) -> VmArchiveTotals:
        """How many VMs are archived, the datastore bytes that freed and the bytes stored."""
        tid = parse_id(tenant_id, "tenantId")
        t = await info.context.read(lambda ctx: archive.totals(ctx, tid))
        return VmArchiveTotals(
            vms_archived=t.vms, bytes_freed=float(t.bytes_freed), bytes_stored=float(t.bytes_stored)
        )


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

    @mutation(ArchiveVmResult, P.VM_POWER)
    async def archive_vm(
        self,
        info: Info[Context, None],
        vm_id: strawberry.ID,
        idempotency_key: str | None = None,
    ) -> Command:
        """Archive a VM that is off now, through the agent that reports it (a docked
        feature): its files go to the policy's storage and a stub stays."""
        vid = parse_id(vm_id, "vmId")
        row = await info.context.write(
            lambda ctx: archive.archive(ctx, vid, idempotency_key=idempotency_key)
        )
        return Command.of(row)

    @mutation(RestoreVmResult, P.VM_POWER)
    async def restore_vm(
        self,
        info: Info[Context, None],
        vm_id: strawberry.ID,
        datastore: str | None = None,
        idempotency_key: str | None = None,
    ) -> Command:
        """Bring an archived VM back (to `datastore` if given) and start it as it was; you
        are mailed when the restore ends."""
        vid = parse_id(vm_id, "vmId")
        row = await info.context.write(
            lambda ctx: archive.restore(ctx, vid, datastore, idempotency_key=idempotency_key)
        )
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


@strawberry.type(description="How many of the tenant's VMs are in one life state.")
class VmStateCount:
    state: LifeState
    count: int


@strawberry.type(description="The VM catalog's figures for the dashboard.")
class VmDashboard:
    by_state: list[VmStateCount] = strawberry.field(
        description="Every life state, in the module's order, each VM counted once "
        "(as its newest sighting reports it)."
    )
    stored_bytes: float = strawberry.field(
        description="What the archived VMs' archives hold in their repositories."
    )
    saved_bytes: float = strawberry.field(
        description="What dedup and compression saved: the archived VMs' size before, "
        "less what their archives hold."
    )
    vcpus_reclaimed: int = strawberry.field(description="vCPUs of VMs shut down or archived.")
    memory_mb_reclaimed: float = strawberry.field(
        description="Memory (MiB) of VMs shut down or archived."
    )
    disk_bytes_reclaimed: float = strawberry.field(
        description="Datastore bytes archived VMs gave back (a VM merely off keeps its disks)."
    )
    power_reclaimed_watts: float = strawberry.field(
        description="An estimate of what the VMs now off or archived would draw left idle "
        "(0.74 W a vCPU, 0.392 W a GiB of memory: Cloud Carbon Footprint's idle coefficients; "
        "the host's own draw and cooling left out, so it errs low)."
    )
    energy_reclaimed_kwh: float = strawberry.field(
        description="That draw over the time each VM has been off or archived."
    )


@strawberry.type(name="VmDashboardPart")
class Dashboard:
    """The VM module's part of `Dashboard` (merged by `cloud/api/graphql/dashboard.py`)."""

    @strawberry.field
    async def vms(
        self, info: Info[Context, None], parent: strawberry.Parent[DashboardRoot]
    ) -> VmDashboard:
        tid = parse_id(parent.tenant_id, "tenantId")
        f = await info.context.read(lambda ctx: dashboard.figures(ctx, tid))
        return VmDashboard(
            by_state=[VmStateCount(state=s, count=n) for s, n in f.by_state.items()],
            stored_bytes=float(f.stored_bytes),
            saved_bytes=float(f.saved_bytes),
            vcpus_reclaimed=f.vcpus_reclaimed,
            memory_mb_reclaimed=float(f.memory_mb_reclaimed),
            disk_bytes_reclaimed=float(f.disk_bytes_reclaimed),
            power_reclaimed_watts=f.power_reclaimed_w,
            energy_reclaimed_kwh=f.energy_reclaimed_kwh,
        )
