"""What an archive holds: every file of the VM as it was read, and the VM as it was.

The manifest is written into the archive's snapshot beside the files, and its hash goes
into the stub, so a restore can compare the VM it brings back with the VM that left,
field by field. Each file's SHA-256 is taken from the bytes as the vault read them from the
hypervisor (`readahead.ReadAhead`), not from a second read, and `verify_readback` reads the
snapshot back from the repository's storage and compares. Only an archive that passes it
may replace the VM's files with a stub: the one rule of the archive step that nothing may
bend.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ...vault.errors import VaultError
from ...vault.repository import Repository

MANIFEST_NAME = ".dockyard/manifest.json"
"""The manifest's name inside the archive's snapshot."""


class ArchiveMismatch(Exception):
    """What the storage gave back is not what was read from the hypervisor."""

    code = "archive_mismatch"


@dataclass(frozen=True)
class ArchivedFile:
    name: str
    """Its name in the snapshot (relative to the VM's folder)."""
    source: str
    """The hypervisor's name for it: `[datastore] folder/disk.vmdk`, a host path, a snapshot id."""
    role: str
    """config, disk, snapshot, nvram, log or other."""
    size: int
    sha256: str
    modified: str | None = None
    """The modification time the hypervisor reported when it was read, checked again just
    before anything is deleted."""


@dataclass(frozen=True)
class Manifest:
    vm_id: str
    vm_name: str
    hypervisor: str
    power_state: str
    taken_at: str
    hardware: dict[str, Any] = field(default_factory=dict)
    """CPUs, memory, MACs, disks and their datastores, annotation, custom attributes:
    whatever the restore must compare and set again."""
    files: tuple[ArchivedFile, ...] = ()

    def to_bytes(self) -> bytes:
        """Canonical JSON, so the same manifest always hashes the same."""
        doc = asdict(self)
        doc["format"] = 1
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    def sha256(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        doc = json.loads(raw)
        doc.pop("format", None)
        files = tuple(ArchivedFile(**f) for f in doc.pop("files", []))
        return cls(**doc, files=files)

    def differences(self, hardware: dict[str, Any]) -> list[str]:
        """Each field of the archived hardware the given one does not match, as a sentence
        (a restore reports them all, not the first)."""
        out = []
        for key in sorted(set(self.hardware) | set(hardware)):
            was, now = self.hardware.get(key), hardware.get(key)
            if was != now:
                out.append(f"{key}: archived {was!r}, now {now!r}")
        return out


class _HashSink(io.RawIOBase):
    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.hash.update(view)
        self.size += len(view)
        return len(view)


def verify_readback(repo: Repository, snapshot_id: str, files: Sequence[ArchivedFile]) -> None:
    """Read every file of the snapshot back from the repository's storage and compare it
    with the hash taken while the hypervisor's bytes were read; the first difference is
    raised, naming the file. A repository that cannot give a file back whole (a damaged
    pack, a lost index) refuses the same way."""
    try:
        repo.reload_index()  # what the storage holds now, not what this process remembers
    except VaultError as e:
        raise ArchiveMismatch(
            f"the repository's index cannot be read: {e}; nothing is deleted"
        ) from None
    for f in files:
        sink = _HashSink()
        try:
            repo.restore_stream(snapshot_id, f.name, sink)  # type: ignore[arg-type]
        except VaultError as e:
            raise ArchiveMismatch(f"{f.name}: {e}; nothing is deleted") from None
        if sink.size != f.size or sink.hash.hexdigest() != f.sha256:
            raise ArchiveMismatch(
                f"{f.name}: the repository gave back {sink.size} bytes with SHA-256 "
                f"{sink.hash.hexdigest()[:16]}..., the hypervisor's were {f.size} bytes, "
                f"{f.sha256[:16]}...; nothing is deleted"
            )
