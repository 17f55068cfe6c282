"""One interface for every hypervisor: what a driver reports and what it can be asked to do.

The module's rules (idleness, placement, notices, the safety net) see only these types, so a
new hypervisor is one new file here. Every failure a user can fix is a `DriverError` with a
code to branch on and a sentence to read; nothing else escapes a driver.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

from ....protocol.vm import Identifiers, PowerAction, Signal


class DriverError(Exception):
    """A failure the user can act on: `code` to branch on, the message to read."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Unreachable(DriverError):
    def __init__(self, message: str) -> None:
        super().__init__("endpoint_unreachable", message)


class LoginFailed(DriverError):
    def __init__(self, message: str) -> None:
        super().__init__("login_failed", message)


class VmGone(DriverError):
    def __init__(self, native_id: str) -> None:
        super().__init__("vm_not_found", f"VM {native_id} no longer exists on this endpoint")


SCHEDULED_EVENT_TAG = "dockyard:scheduled-event"
"""A tag discovery sets on a VM its provider has scheduled maintenance for (EC2's scheduled
events), never one read from the provider's own tags: the safety net treats the VM like one
whose host is in maintenance."""


@dataclass(frozen=True)
class HostInfo:
    native_id: str
    name: str
    cpus: int
    """Logical CPUs (threads) the host offers."""
    memory_mb: int
    maintenance: bool = False
    connected: bool = True


@dataclass(frozen=True)
class DatastoreInfo:
    native_id: str
    name: str
    capacity_bytes: int
    free_bytes: int
    hosts: tuple[str, ...] = ()
    """Hosts that mount it; empty when every host does."""
    accessible: bool = True


@dataclass(frozen=True)
class VmInfo:
    native_id: str
    """The id commands address, stable across renames (vSphere moref, libvirt UUID, EC2 id)."""
    name: str
    power_state: str
    """`on`, `off` or `suspended`."""
    host: str | None
    datastores: tuple[str, ...]
    cpus: int
    memory_mb: int
    identifiers: Identifiers
    tags: dict[str, str] = field(default_factory=dict)
    tools_running: bool = False
    """Guest tools answer, so a guest shutdown can be asked for."""


@dataclass(frozen=True)
class Inventory:
    endpoint: str
    hosts: tuple[HostInfo, ...]
    datastores: tuple[DatastoreInfo, ...]
    vms: tuple[VmInfo, ...]


@dataclass(frozen=True)
class Sample:
    """What one collection saw of one VM; a signal a driver cannot read is absent."""

    native_id: str
    at: datetime
    values: dict[Signal, float]


@dataclass(frozen=True)
class DiskSpec:
    size_gb: int
    thin: bool = True


@dataclass(frozen=True)
class VmSpec:
    """A VM to create; the placement policy picks its host and datastore."""

    name: str
    cpus: int = 1
    memory_mb: int = 1024
    disks: tuple[DiskSpec, ...] = (DiskSpec(8),)
    guest_id: str = "otherGuest64"
    annotation: str = ""
    tags: dict[str, str] = field(default_factory=dict)


class Driver(abc.ABC):
    """A connection to one endpoint (a vCenter, a set of libvirt hosts, an EC2 region)."""

    kind: ClassVar[str]
    signals: ClassVar[frozenset[Signal]]
    """The idleness signals this driver can read; the others are always unknown."""

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        self.name = name
        self.config = config

    @abc.abstractmethod
    def discover(self) -> Inventory:
        """Every VM, host and datastore of the endpoint, in one consistent read where possible."""

    @abc.abstractmethod
    def sample(self, vms: Sequence[VmInfo], now: datetime, window: timedelta) -> list[Sample]:
        """One sample per powered-on VM it could read, each the peak over `window` up to
        `now` where the source keeps a series; a VM it could not read is left out."""

    @abc.abstractmethod
    def power(self, vm: VmInfo, action: PowerAction) -> str:
        """Carry out `action`; returns the power state after it (`on`, `off`, `suspended`)."""

    def create(self, spec: VmSpec, host: HostInfo, datastore: DatastoreInfo) -> VmInfo:
        raise DriverError("not_supported", f"{self.kind} endpoints cannot create VMs here")

    def close(self) -> None:  # noqa: B027 - optional: most drivers hold a connection
        """Release the connection; the default holds none."""
