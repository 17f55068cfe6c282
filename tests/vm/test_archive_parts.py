"""The parts of the archive step that stand alone: the stub, the manifest's hashes and their
read-back from the repository, and a vSphere datastore's files streamed into the vault and
back (vcsim serves the datastore URLs over a temporary folder)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import pytest

from dockyard.agent.modules.vm.datastore import DatastoreFiles, DatastorePath
from dockyard.agent.modules.vm.drivers import open_driver
from dockyard.agent.modules.vm.drivers.base import DriverError
from dockyard.agent.modules.vm.manifest import (
    ArchivedFile,
    ArchiveMismatch,
    Manifest,
    verify_readback,
)
from dockyard.agent.modules.vm.readahead import ReadAhead
from dockyard.agent.modules.vm.stub import (
    Stub,
    StubError,
    StubForeign,
    StubTampered,
    stub_key,
)
from dockyard.agent.vault.backends import LocalBackend
from dockyard.agent.vault.repository import Repository, Source

from ..peers.vsphere_sim import Vcsim
from ..vault.conftest import FAST, PASS, SMALL, vm_like

DIGEST = "ab" * 32


def _stub(**changes: object) -> Stub:
    fields: dict[str, object] = {
        "vm_id": "4210c5a4-0a0b-4c4d-8e8f-000000000001",
        "vm_name": "build-07",
        "hypervisor": "vsphere",
        "repository": "r" * 32,
        "location": "s3://archive/tenant-a",
        "snapshot": "s" * 32,
        "manifest_sha256": DIGEST,
        "archived_at": "2026-12-03T12:00:00+00:00",
        "files": 4,
        "size": 10_000,
    }
    fields.update(changes)
    return Stub(**fields)  # type: ignore[arg-type]


def test_a_signed_stub_reads_back_and_checks_under_its_repository_key() -> None:
    key = stub_key(b"m" * 64)
    raw = _stub().signed(key).dumps()
    back = Stub.loads(raw)
    back.verify(key, "r" * 32)
    assert back == _stub()
    assert b"password" not in raw
    assert "m" * 8 not in raw.decode()


@pytest.mark.parametrize(
    ("damage", "error", "words"),
    [
        ("edited", StubTampered, "MAC does not match"),
        ("truncated", StubTampered, "does not parse"),
        ("other key", StubTampered, "MAC does not match"),
        ("other repository", StubForeign, "open the repository it names"),
        ("no mac", StubTampered, "no MAC"),
        ("wrong type", StubTampered, "fields are not a stub's"),
    ],
)
def test_a_damaged_or_foreign_stub_is_a_clear_error(
    damage: str, error: type[StubError], words: str
) -> None:
    key = stub_key(b"m" * 64)
    raw = _stub().signed(key).dumps()
    doc = json.loads(raw)
    check_key, repository = key, "r" * 32
    if damage == "edited":
        doc["snapshot"] = "t" * 32
        raw = json.dumps(doc).encode()
    elif damage == "truncated":
        raw = raw[: len(raw) // 2]
    elif damage == "other key":
        check_key = stub_key(b"n" * 64)
    elif damage == "other repository":
        repository = "q" * 32
    elif damage == "no mac":
        del doc["mac"]
        raw = json.dumps(doc).encode()
    else:
        doc["files"] = "four"
        raw = json.dumps(doc).encode()
    with pytest.raises(error, match=words):
        Stub.loads(raw).verify(check_key, repository)


@pytest.mark.parametrize(
    "location", ["s3://AKIA:secret@archive/x", "https://store/x?X-Amz-Signature=abc"]
)
def test_a_stub_never_carries_credentials(location: str) -> None:
    with pytest.raises(StubError, match="never how to get in"):
        _stub(location=location)
    with pytest.raises(StubError, match="unsigned"):
        _stub().dumps()


def test_manifest_hash_is_canonical_and_differences_name_every_field() -> None:
    files = (ArchivedFile("vm.vmx", "[ds] vm/vm.vmx", "config", 10, DIGEST),)
    a = Manifest("id", "vm", "vsphere", "off", "2026-12-03", {"cpus": 2, "memory_mb": 4096}, files)
    b = Manifest.from_bytes(a.to_bytes())
    assert b == a
    assert b.sha256() == a.sha256()
    assert a.differences({"cpus": 2, "memory_mb": 2048, "macs": ["00:50:56:00:00:01"]}) == [
        "macs: archived None, now ['00:50:56:00:00:01']",
        "memory_mb: archived 4096, now 2048",
    ]


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(
        LocalBackend(tmp_path / "repo"), PASS, params=SMALL, pack_bytes=1024 * 1024, cost=FAST
    )


def _archive(repo: Repository, blobs: dict[str, bytes]) -> tuple[str, list[ArchivedFile]]:
    readers: dict[str, ReadAhead] = {}

    def opener(name: str, data: bytes):  # type: ignore[no-untyped-def]
        @contextmanager
        def open_() -> Iterator[BinaryIO]:
            with ReadAhead(io.BytesIO(data)) as readers[name]:
                yield io.BufferedReader(readers[name])

        return open_

    snap, _ = repo.store([Source(n, opener(n, d), len(d)) for n, d in blobs.items()], name="vm")
    files = [
        ArchivedFile(n, f"[ds] vm/{n}", "disk", readers[n].size, readers[n].hash.hexdigest())
        for n in blobs
    ]
    return snap.id, files


def test_readback_passes_on_a_whole_archive_and_refuses_a_damaged_one(
    repo: Repository, tmp_path: Path
) -> None:
    blobs = {"disk0.vmdk": vm_like(2_000_000, 1), "vm.vmx": b'config.version = "8"\n'}
    snapshot, files = _archive(repo, blobs)
    verify_readback(repo, snapshot, files)
    wrong = [files[0], ArchivedFile("vm.vmx", "[ds] vm/vm.vmx", "config", 21, DIGEST)]
    with pytest.raises(ArchiveMismatch, match="vm.vmx: the repository gave back"):
        verify_readback(repo, snapshot, wrong)
    pack = next(p for p in (tmp_path / "repo" / "data").rglob("*") if p.is_file())
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    pack.write_bytes(bytes(raw))
    with pytest.raises(ArchiveMismatch, match="nothing is deleted"):
        verify_readback(repo, snapshot, files)


@pytest.fixture(scope="module")
def datastore() -> Iterator[tuple[DatastoreFiles, str, DatastorePath]]:
    sim = Vcsim(host=1, vm=1, ds=1).start()
    driver = open_driver("vc", {"kind": "vsphere", **sim.config()})
    si = driver.si  # type: ignore[attr-defined]
    files = DatastoreFiles(si, f"https://{sim.host}:{sim.port}", verify=False)
    try:
        vm = si.RetrieveContent().rootFolder.childEntity[0].vmFolder.childEntity[0]
        folder = DatastorePath.parse(vm.config.files.vmPathName)
        yield files, "DC0", folder
    finally:
        files.close()
        driver.close()
        sim.stop()


def test_a_disk_streams_from_the_datastore_into_the_vault_and_back(
    datastore: tuple[DatastoreFiles, str, DatastorePath], repo: Repository
) -> None:
    files, dc, vmx = datastore
    disk = DatastorePath(vmx.datastore, vmx.path.rsplit("/", 1)[0] + "/disk1-flat.vmdk")
    original = vm_like(6_000_000, 3)  # vcsim's disks are empty placeholders
    files.write(disk, dc, io.BytesIO(original), len(original))  # type: ignore[arg-type]
    assert files.size(disk, dc) == len(original)
    readers: list[ReadAhead] = []

    @contextmanager
    def from_datastore() -> Iterator[BinaryIO]:
        with files.reader(disk, dc) as stream, ReadAhead(stream) as ahead:
            readers.append(ahead)
            yield io.BufferedReader(ahead)

    snap, _ = repo.store([Source("disk1-flat.vmdk", from_datastore, len(original))], name="vm")
    (hashed,) = readers
    archived = ArchivedFile(
        "disk1-flat.vmdk", str(disk), "disk", hashed.size, hashed.hash.hexdigest()
    )
    verify_readback(repo, snap.id, [archived])

    back = DatastorePath(disk.datastore, disk.path.replace("disk1-flat", "restored-flat"))
    files.write_from(
        back, dc, len(original), lambda out: repo.restore_stream(snap.id, "disk1-flat.vmdk", out)
    )
    with files.reader(back, dc) as stream:
        assert stream.read() == original


def test_datastore_errors_are_driver_errors(
    datastore: tuple[DatastoreFiles, str, DatastorePath],
) -> None:
    files, dc, vmx = datastore
    with pytest.raises(DriverError, match="does not exist") as e:
        files.size(DatastorePath(vmx.datastore, "nowhere/none.vmdk"), dc)
    assert e.value.code == "file_not_found"
    for bad in ("disk.vmdk", "[ds] /etc/passwd", "[ds] a/../../b", "[] x"):
        with pytest.raises(DriverError, match="not a datastore path"):
            DatastorePath.parse(bad)

    def fails(out: BinaryIO) -> None:
        out.write(b"x" * 1000)
        raise RuntimeError("the repository went away")

    target = DatastorePath(vmx.datastore, "nowhere-yet/partial.vmdk")
    with pytest.raises(RuntimeError, match="went away"):
        files.write_from(target, dc, 10_000, fails)
