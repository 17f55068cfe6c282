"""The VM module's documents on the wire: its policy, its inventory records, its decisions.

They live beside the protocol because both sides read them: the cloud validates a
vm-lifecycle policy before it is versioned and sent down, and merges the inventory and
decision records agents send up; the agent enforces the same policy. A policy that cannot
work (a threshold nobody can stay under, a notice longer than the idle period) is refused
here, with a sentence saying why, before anything acts on it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from . import Message

POLICY_KIND = "vm-lifecycle"


class Signal(enum.StrEnum):
    """What a driver can sample; the policy chooses which of them decide idleness."""

    CPU = "cpu"
    """Percent of the VM's allocated CPU, 0-100."""
    DISK = "disk"
    """Disk I/O in KB/s, read plus write."""
    NET = "net"
    """Network I/O in KB/s, received plus sent."""
    APPS = "apps"
    """Application processes other than the operating system's own (a count)."""
    SESSIONS = "sessions"
    """Logged-in interactive users (a count); any open session keeps the VM active."""
    GPU = "gpu"
    """GPU use in percent; a busy GPU keeps the VM active."""
    HEARTBEAT = "heartbeat"
    """Guest heartbeat (1 alive, 0 absent): recorded and shown, never a reason to act."""
    VMS = "vms"
    """Powered-on VMs a hypervisor host runs: a physical host with none is idle."""


THRESHOLD_SIGNALS = (Signal.CPU, Signal.DISK, Signal.NET, Signal.APPS)
"""Signals compared with a threshold; sessions and GPU are vetoes, heartbeat is shown only."""


class PowerAction(enum.StrEnum):
    SHUTDOWN = "shutdown"
    """A guest shutdown where tools allow it, a power off otherwise."""
    POWER_OFF = "power_off"
    SUSPEND = "suspend"
    STANDBY = "standby"
    POWER_ON = "power_on"


class HostChoice(enum.StrEnum):
    LEAST_ALLOCATED_SHARE = "least_allocated_share"
    """The host whose allocated vCPUs and memory are the smallest share of its capacity."""
    LEAST_ALLOCATED_ABSOLUTE = "least_allocated_absolute"
    """The host with the most unallocated memory, then the most unallocated vCPUs."""
    ROUND_ROBIN = "round_robin"


class Statistic(enum.StrEnum):
    """Which figure of a day's samples is compared with a signal's threshold."""

    PEAK = "peak"
    """The day's highest sample: one busy moment keeps the VM active (the default)."""
    P95 = "p95"
    """The 95th percentile: the busiest 5% of the day's samples are forgiven."""
    P99 = "p99"


class Thresholds(BaseModel):
    """A VM is idle on a signal while the day's statistic stays strictly under its threshold.

    The defaults keep a DNS or NTP server (about 200 MB of network a day, 2.4 KB/s on
    average, little CPU) active: its network alone crosses `net`. Anchors (the module's
    README quotes them with their sources): AWS's idle rule, peak CPU under 5% and network
    under 5 MB a day over 14 days; Trusted Advisor, daily CPU 10% and network 5 MB on 4 of
    14 days; Azure Advisor, CPU 5% and network under 2% over 7 days; BMC Helix, CPU 5%,
    disk 100 KB/s and network 200 KB/s for 95% of the period. cpu and disk here are those
    figures against the day's peak; a VM whose every five-minute sample stays under the
    1 KB/s of `net` moves at most 86 MB a day.
    """

    model_config = ConfigDict(extra="forbid")
    cpu: float = Field(default=5.0, description="percent")
    disk: float = Field(default=100.0, description="KB/s")
    net: float = Field(default=1.0, description="KB/s")
    apps: float = Field(default=1.0, description="application processes")

    @model_validator(mode="after")
    def _possible(self) -> Thresholds:
        problems = []
        for name in ("cpu", "disk", "net", "apps"):
            value = getattr(self, name)
            if value <= 0:
                problems.append(f"{name} threshold {value:g} can never be undercut")
        if self.cpu > 100:
            problems.append(f"cpu threshold {self.cpu:g}% is above 100%: every VM would be idle")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class Placement(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: HostChoice = HostChoice.LEAST_ALLOCATED_SHARE
    datastore: str = Field(default="most_free", pattern="^most_free$")


class FileRole(enum.StrEnum):
    """What a file of a VM is for; the archive rules choose by it."""

    CONFIG = "config"
    DISK = "disk"
    SNAPSHOT = "snapshot"
    """A delta disk or memory state of a hypervisor snapshot in the disk's chain."""
    NVRAM = "nvram"
    LOG = "log"
    OTHER = "other"


class StorageKind(enum.StrEnum):
    DIRECTORY = "directory"
    """A vault repository in a directory the agent can write (a local disk, an NFS mount)."""
    S3 = "s3"
    """A vault repository in a bucket the tenant owns; the credentials stay in the agent's
    settings (`credentials` names them), never in a policy that passes through the cloud."""
    CLOUD = "cloud"
    """Storage the cloud manages, through URLs it signs one by one (flow mode `data` only)."""


class ArchiveStorage(BaseModel):
    """Where archived VM files go: a storage policy inside the vm-lifecycle policy."""

    model_config = ConfigDict(extra="forbid")
    kind: StorageKind = StorageKind.DIRECTORY
    path: str | None = Field(default=None, max_length=1024)
    """DIRECTORY: an absolute path on the agent's host."""
    bucket: str | None = Field(
        default=None, max_length=63, pattern=r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$"
    )
    prefix: str = Field(default="dockyard-vm", max_length=256, pattern=r"^[A-Za-z0-9._\-/]*$")
    endpoint_url: str | None = Field(default=None, max_length=512, pattern=r"^https?://[^\s@]+$")
    credentials: str | None = Field(default=None, max_length=80, pattern=r"^[A-Za-z0-9._\-]+$")
    """S3: the name of a credential set in the agent's settings (`vm settings`)."""

    @model_validator(mode="after")
    def _complete(self) -> ArchiveStorage:
        if self.kind == StorageKind.DIRECTORY and not (self.path or "").startswith("/"):
            raise ValueError("directory storage needs an absolute path")
        if self.kind == StorageKind.S3 and not self.bucket:
            raise ValueError("s3 storage needs a bucket")
        return self


class PostRestoreKind(enum.StrEnum):
    POWER_ON = "power_on"
    WAIT_HEARTBEAT = "wait_heartbeat"
    """Wait for the guest's heartbeat where the hypervisor has one (vSphere tools)."""
    WEBHOOK = "webhook"
    """POST the restore's result, signed (HMAC-SHA256 over timestamp and body)."""


class RestorePlace(enum.StrEnum):
    """Where a restore may write a VM's disks."""

    ORIGINAL = "original"
    """Only where they were: a full datastore fails the restore, nothing written."""
    WHEN_FULL = "when_full"
    """Where they were; another datastore of the same host with room when that one is
    full, or when the restore names one."""


class PostRestoreAction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: PostRestoreKind
    url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://[^\s]+$")
    timeout_s: int = Field(default=300, ge=1, le=3600)

    @model_validator(mode="after")
    def _complete(self) -> PostRestoreAction:
        if (self.kind == PostRestoreKind.WEBHOOK) != bool(self.url):
            raise ValueError("a webhook action needs a url, and only a webhook takes one")
        return self


class ArchiveRules(BaseModel):
    """When a VM that was shut down gives its files to the vault (a docked feature)."""

    model_config = ConfigDict(extra="forbid")
    never: bool = False
    """Never archive in this policy's scope (shutdown is where the loop stops)."""
    at_once: bool = False
    """Archive right after the module's own shutdown, without waiting for `off_days`."""
    roles: list[FileRole] = Field(
        default_factory=lambda: [
            FileRole.CONFIG,
            FileRole.DISK,
            FileRole.SNAPSHOT,
            FileRole.NVRAM,
            FileRole.LOG,
        ],
        min_length=1,
    )
    """The files that go into the archive; the others stay beside the stub. Config and
    disks always go: without them nothing can be restored."""
    min_file_age_days: int = Field(default=0, ge=0, le=3650)
    """Only VMs whose files all went unmodified this long."""
    min_vm_gb: float | None = Field(default=None, ge=0)
    max_vm_gb: float | None = Field(default=None, gt=0)
    datastore_used_percent: float | None = Field(default=None, gt=0, le=100)
    """When set, only VMs on a datastore past this share used are archived."""
    storage: ArchiveStorage | None = None
    """Where archives go; none set, nothing is archived (and `explain` says so)."""
    restore_to: RestorePlace = RestorePlace.WHEN_FULL
    post_restore: list[PostRestoreAction] = Field(
        default_factory=lambda: [PostRestoreAction(kind=PostRestoreKind.POWER_ON)], max_length=10
    )

    @model_validator(mode="after")
    def _coherent(self) -> ArchiveRules:
        missing = {FileRole.CONFIG, FileRole.DISK} - set(self.roles)
        if missing:
            raise ValueError(
                "the archive must hold the config and the disks, or nothing can be restored"
            )
        if (
            self.min_vm_gb is not None
            and self.max_vm_gb is not None
            and self.min_vm_gb >= self.max_vm_gb
        ):
            raise ValueError("min_vm_gb is not below max_vm_gb: no VM would qualify")
        return self


class VmLifecyclePolicy(BaseModel):
    """The vm-lifecycle policy document (first and second period, notice, safety net)."""

    model_config = ConfigDict(extra="forbid")
    endpoints: list[str] = Field(default_factory=list, max_length=100)
    """Endpoint names in scope; empty means every endpoint of the agent."""
    signals: list[Signal] = Field(
        default_factory=lambda: [Signal.CPU, Signal.DISK, Signal.NET], min_length=1
    )
    thresholds: Thresholds = Field(default_factory=Thresholds)
    statistics: dict[Signal, Statistic] = Field(default_factory=dict)
    """Per threshold signal, the day's figure compared with its threshold; peak if absent."""
    idle_days: int = Field(default=90, ge=1, le=3650)
    """The first period: idle that long, the VM is shut down (after the notice)."""
    off_days: int = Field(default=30, ge=1, le=3650)
    """The second period: left off that long, the VM is archived (part 2)."""
    notice_hours: float = Field(default=24.0, ge=0, le=24 * 90)
    min_coverage: float = Field(default=0.8, gt=0, le=1)
    """Share of a day's expected samples that must be present, else the day is unknown."""
    sample_interval_s: int = Field(default=300, ge=20, le=86_400)
    action: PowerAction = PowerAction.SHUTDOWN
    owner_tag: str = Field(default="owner", min_length=1, max_length=80)
    default_contact: str | None = Field(
        default=None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
    )
    exclusion_tag: str = Field(default="dockyard:exclude", min_length=1, max_length=80)
    budget_share: float = Field(
        default=0.10, gt=0, le=1, validation_alias=AliasChoices("budget_share", "max_share_per_run")
    )
    """The budget: at most this share of the VMs in scope (at least one) is acted on per
    `budget_window_hours`, counted across runs, rounds, restarts and whoever asks; past it,
    each action needs an approval. Docked, the cloud's policy may only lower the agent's."""
    budget_window_hours: float = Field(default=24.0, ge=1, le=24 * 90)
    placement: Placement = Field(default_factory=Placement)
    archive: ArchiveRules = Field(default_factory=ArchiveRules)

    @model_validator(mode="after")
    def _coherent(self) -> VmLifecyclePolicy:
        if self.action == PowerAction.POWER_ON:
            raise ValueError("action power_on cannot be what happens to an idle VM")
        odd = [s.value for s in self.statistics if s not in THRESHOLD_SIGNALS]
        if odd:
            raise ValueError(f"statistics apply to signals with a threshold, not {', '.join(odd)}")
        if self.notice_hours >= self.idle_days * 24:
            raise ValueError(
                f"notice of {self.notice_hours:g} h is not shorter than the idle period "
                f"of {self.idle_days} days"
            )
        return self

    def statistic(self, signal: Signal) -> Statistic:
        return self.statistics.get(signal, Statistic.PEAK)

    def budget(self, in_scope: int) -> int:
        """Actions allowed per window for `in_scope` VMs: the share, at least one."""
        return max(1, int(self.budget_share * in_scope))

    def covers(self, endpoint: str) -> bool:
        return not self.endpoints or endpoint in self.endpoints

    def within(self, local: VmLifecyclePolicy) -> VmLifecyclePolicy:
        """This (the cloud's) policy, its budget no larger than the agent's local one: the
        cloud may lower the agent's cap, never raise it. Its scope is narrowed to the local
        one where the agent uses it (`Lifecycle.in_scope` sees only the endpoints the local
        policy covers), so an empty `endpoints` from the cloud cannot widen the scope and,
        with it, the number of VMs the budget's share is taken of."""
        return self.model_copy(
            update={
                "budget_share": min(self.budget_share, local.budget_share),
                "budget_window_hours": max(self.budget_window_hours, local.budget_window_hours),
            }
        )


def notice_due(sent_at: datetime, notice_hours: float) -> datetime:
    """When a notice sent at `sent_at` runs out: computed once by whoever sends it, written
    in the mail, carried with the decision and the command, and nothing acts before it."""
    return sent_at + timedelta(hours=notice_hours)


MIN_AGREEING = 2
"""Identifiers two records must share to be one VM: one is not enough, since clones share a
BIOS UUID and a cloned NIC may keep its MAC."""


def identifier_keys(ids: Mapping[str, Any]) -> set[str]:
    """A record's identifiers as comparable keys (`kind:value`, lower case)."""
    out = set()
    for key in ("instance_uuid", "bios_uuid", "ec2_instance_id"):
        value = ids.get(key)
        if value:
            out.add(f"{key}:{str(value).lower()}")
    for mac in ids.get("macs") or ():
        if mac:
            out.add(f"mac:{str(mac).lower()}")
    return out


class Identifiers(Message):
    """What can tell the same VM seen by two agents; two must agree to match."""

    instance_uuid: str | None = None
    bios_uuid: str | None = None
    macs: list[str] = []
    ec2_instance_id: str | None = None

    def keys(self) -> set[str]:
        return identifier_keys(self.model_dump())

    def possible_clone_of(self, other: Identifiers) -> bool:
        """The same BIOS UUID, and too little else in common to be the same VM seen twice
        (on two endpoints that share a host, say): a clone, or a copy registered twice."""
        bios = (self.bios_uuid or "").lower()
        return (
            bool(bios)
            and bios == (other.bios_uuid or "").lower()
            and (len(self.keys() & other.keys()) < MIN_AGREEING)
        )


class IdleState(enum.StrEnum):
    ACTIVE = "active"
    IDLE = "idle"
    UNKNOWN = "unknown"
    EXCLUDED = "excluded"
    MAINTENANCE = "maintenance"
    """Its host is in maintenance: not judged, not acted on, until the host is back."""


class LifeState(enum.StrEnum):
    """Where a VM is in the module's loop; one state machine, kept in the module's journal."""

    RUNNING = "running"
    IDLE = "idle"
    NOTICED = "noticed"
    OFF = "off"
    ARCHIVING = "archiving"
    ARCHIVED = "archived"
    RESTORING = "restoring"
    ARCHIVE_FAILED = "archive_failed"
    """The archive stopped before anything was deleted; the VM is whole where it was."""
    RESTORE_FAILED = "restore_failed"
    """The restore stopped; the stub and the archive are untouched, so it can run again."""


class ArchiveRecord(Message):
    """An archived VM's figures, for reports."""

    archived_at: datetime
    snapshot: str
    repository: str
    size_before: int
    """Bytes the VM's files took on the datastore before the archive."""
    stored_bytes: int
    """What the archive added to the repository after dedup and compression."""
    restore_count: int = 0
    restored_at: datetime | None = None
    restored_from: str | None = None
    """The VM's native id when it was archived, where its restore gave it a new one (an EC2
    instance comes back from its AMI under a new instance id); None where it kept its id."""


MAX_IDLENESS_DAYS = 120
"""How many judged days an inventory record carries at most (the first period's default is
90): the rest stay on the agent."""


class ActivityDay(Message):
    """One UTC day of the first period, as the idleness rule judged it."""

    day: datetime
    """The day's start (00:00 UTC)."""
    figures: dict[Signal, float]
    """Each threshold signal's figure that day (its statistic: peak unless the policy says
    otherwise), in the threshold's unit; a signal without samples that day is absent."""


class Idleness(Message):
    """The module's last judgement of the VM, sent with its inventory record (metadata), so
    the catalog can say why the VM is or is not idle and chart the days it was judged by."""

    state: IdleState
    at: datetime
    window_start: datetime
    window_end: datetime
    reasons: list[str] = []
    thresholds: dict[Signal, float] = {}
    """What each signal's figure must stay under for the VM to be idle."""
    statistics: dict[Signal, Statistic] = {}
    days: list[ActivityDay] = Field(default=[], max_length=MAX_IDLENESS_DAYS)
    """Oldest first; days without any sample are absent."""


class VmRecord(Message):
    """One VM as an agent saw it, sent up in metadata batches of kind `vm.inventory`."""

    endpoint: str
    native_id: str
    name: str
    kind: str
    power_state: str
    host: str | None = None
    datastores: list[str] = []
    cpus: int = 0
    memory_mb: int = 0
    identifiers: Identifiers = Identifiers()
    owner: str | None = None
    tags: dict[str, str] = {}
    last_active_at: datetime | None = None
    idle_state: IdleState = IdleState.UNKNOWN
    seen_at: datetime
    possible_clone_of: list[str] = []
    """Other VMs of this agent with the same BIOS UUID (`endpoint/native-id`): a clone."""
    life_state: LifeState = LifeState.RUNNING
    life_reason: str | None = None
    """Why the VM is in a failed state (a job error), else None."""
    archive: ArchiveRecord | None = None
    idleness: Idleness | None = None
    """The last evaluation; None before the first, and from agents older than this field."""


class Decision(Message):
    """Why a VM is (or is not) idle, sent up in batches of kind `vm.decision`."""

    decision_id: str
    endpoint: str
    native_id: str
    state: IdleState
    window_start: datetime
    window_end: datetime
    signals: list[Signal]
    reasons: list[str]
    missing_days: int = 0
    proposed_action: PowerAction | None = None
    owner: str | None = None
    notice_hours: float = 24.0
    vm_name: str | None = None
    statistics: dict[Signal, Statistic] = {}
    """The figure each signal was judged by (peak where absent), as the reasons name it."""
