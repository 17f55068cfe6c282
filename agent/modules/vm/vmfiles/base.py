"""What every hypervisor's file access offers the archive engine.

Names: a file's `name` is its name inside the archive's snapshot, relative to the VM's
folder when it lives there (`disk1-flat.vmdk`) and `external/<place>/<path>` when it does
not (a disk on a second datastore). Its `source` is the hypervisor's own name for it
(`[ds] vm/disk1.vmdk`, a host path), which is what a restore writes back to.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, BinaryIO

from ....protocol.vm import FileRole
from ..drivers.base import DriverError, VmInfo


class VmFilesError(DriverError):
    """A file step that cannot go on; `code` is the job's error code."""


@dataclass(frozen=True)
class VmFile:
    name: str
    source: str
    role: FileRole
    size: int
    modified: str | None = None
    """What the hypervisor says of the file's last change, compared again before delete."""


@dataclass(frozen=True)
class ExternalFile:
    """A file the VM needs that another VM (or nobody's VM: an ISO) also uses: a linked
    clone's base disk, a qcow2 backing file, a shared disk. Never archived, never removed;
    recorded so a restore can say when it is gone."""

    source: str
    size: int
    why: str


class VmFiles(abc.ABC):
    """One endpoint's VM files; every method raises `DriverError` with a job's code."""

    hypervisor: str

    @abc.abstractmethod
    def files(self, vm: VmInfo) -> tuple[list[VmFile], list[ExternalFile]]:
        """The VM's own files, and the files it uses that are not its alone."""

    @abc.abstractmethod
    def reader(self, f: VmFile) -> AbstractContextManager[BinaryIO]:
        """The file's bytes, streamed from the hypervisor (no copy on the agent's disk)."""

    @abc.abstractmethod
    def write(self, f: VmFile, produce: Callable[[BinaryIO], None]) -> None:
        """Write the file back at its source from what `produce` writes to its stream."""

    @abc.abstractmethod
    def delete(self, f: VmFile) -> None:
        """Remove the file; a file already gone is not an error (a resumed delete)."""

    @abc.abstractmethod
    def stat(self, f: VmFile) -> tuple[int, str | None] | None:
        """Its size and modification mark now, None if it is gone."""

    @abc.abstractmethod
    def read_stub(self, vm: VmInfo) -> bytes | None: ...

    @abc.abstractmethod
    def write_stub(self, vm: VmInfo, raw: bytes) -> None: ...

    @abc.abstractmethod
    def remove_stub(self, vm: VmInfo) -> None: ...

    @abc.abstractmethod
    def fence(self, vm: VmInfo) -> dict[str, str]:
        """Keep the VM from being powered on until `unfence`; idempotent. Returns what
        `unfence` needs to put it back (the host and pool it ran on), kept in the journal
        and in the manifest, so an agent on a new machine can restore it too."""

    @abc.abstractmethod
    def unfence(self, vm: VmInfo, placement: dict[str, str] | None) -> None: ...

    @abc.abstractmethod
    def fenced(self, vm: VmInfo) -> bool: ...

    @abc.abstractmethod
    def power_state(self, vm: VmInfo) -> str: ...

    @abc.abstractmethod
    def power_on(self, vm: VmInfo) -> None: ...

    @abc.abstractmethod
    def hardware(self, vm: VmInfo) -> dict[str, Any]:
        """What a restore must bring back the same, compared field by field."""

    @abc.abstractmethod
    def mark(self, vm: VmInfo, text: str | None) -> None:
        """Say on the VM itself that it is archived (text), or no longer (None)."""

    @abc.abstractmethod
    def free_bytes(self, f: VmFile) -> int | None:
        """Room left where the file goes back; None when the hypervisor cannot tell."""

    # --- restoring to another place (datastore, storage pool) ------------------------
    # A hypervisor that cannot move a VM's disks keeps these defaults: a restore then goes
    # only where the VM was, and asking for another place is a clear `not_supported`.

    def places(self, vm: VmInfo) -> dict[str, int]:
        """Where the VM's disks could go back instead, with the bytes free in each."""
        raise DriverError(
            "not_supported", f"{self.hypervisor}: restoring disks to another place is not built"
        )

    def relocate(self, f: VmFile, place: str) -> VmFile:
        """The file as it would be written in `place` (same folder and name there)."""
        raise DriverError(
            "not_supported", f"{self.hypervisor}: restoring disks to another place is not built"
        )

    def prepare(self, f: VmFile) -> None:  # noqa: B027 - optional
        """Make the folder the (relocated) file goes into."""

    def repoint(
        self, vm: VmInfo, moved: dict[str, str], halfway: Callable[[], None] | None = None
    ) -> None:
        """Point the VM's disks at their new sources (old source -> new source).
        `halfway` is called between the steps of a repoint that takes more than one (the
        kill -9 test's point inside it); a single call to the hypervisor never calls it."""
        raise DriverError(
            "not_supported", f"{self.hypervisor}: restoring disks to another place is not built"
        )

    def heartbeat(self, vm: VmInfo) -> bool | None:
        """The guest's heartbeat, where the hypervisor has one."""
        return None

    def close(self) -> None:  # noqa: B027 - optional
        pass


def chunks(stream: BinaryIO, size: int = 1 << 20) -> Iterator[bytes]:
    while piece := stream.read(size):
        yield piece
