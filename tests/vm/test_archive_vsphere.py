"""Archive and restore of a vSphere VM on vcsim, through the datastore file service.

vcsim's disks are empty placeholders, so every file the archive takes is first filled with
generated, non-trivial bytes over the datastore's PUT; the restore's bytes are compared
with those. One vcsim serves the module; each test takes its own VM.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dockyard.agent.modules.vm.archive import ArchiveFailed, Archiver
from dockyard.agent.modules.vm.datastore import DatastorePath
from dockyard.agent.modules.vm.drivers import open_driver
from dockyard.agent.modules.vm.drivers.base import DriverError, VmInfo
from dockyard.agent.modules.vm.drivers.vsphere import VsphereDriver
from dockyard.agent.modules.vm.store import VmStore
from dockyard.agent.modules.vm.stub import STUB_NAME, Stub
from dockyard.agent.modules.vm.vmfiles.vsphere import VsphereFiles
from dockyard.agent.protocol.vm import ArchiveRules, LifeState, PowerAction, RestorePlace
from dockyard.agent.vault.backends import LocalBackend, S3Backend
from dockyard.agent.vault.repository import Repository

from ..peers.cutter import Cutter
from ..peers.vsphere_sim import Vcsim
from ..vault.conftest import FAST, PASS, SMALL, vm_like

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def sim() -> Iterator[Vcsim]:
    server = Vcsim(host=1, vm=12, ds=2).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def driver(sim: Vcsim) -> Iterator[VsphereDriver]:
    d = open_driver("vc", {"kind": "vsphere", **sim.config()})
    assert isinstance(d, VsphereDriver)
    try:
        yield d
    finally:
        d.close()


_taken: set[str] = set()


@pytest.fixture
def vm(driver: VsphereDriver) -> VmInfo:
    """A VM of its own for the test, off, its files filled with real-shaped bytes."""
    info = next(v for v in driver.discover().vms if v.native_id not in _taken)
    _taken.add(info.native_id)
    driver.power(info, PowerAction.POWER_OFF)
    files = VsphereFiles(driver)
    own, _ = files.files(info)
    for n, f in enumerate(own):
        data = vm_like(3_000_000, n + 1) if f.role == "disk" else f"{f.name} {n}\n".encode() * 50
        files.ds.write(DatastorePath.parse(f.source), files._dc_for(f), io.BytesIO(data), len(data))
    files.close()
    return info


def _contents(files: VsphereFiles, vm: VmInfo) -> dict[str, bytes]:
    own, _ = files.files(vm)
    out = {}
    for f in own:
        with files.reader(f) as stream:
            out[f.name] = stream.read()
    return out


@pytest.fixture
def repo_path(tmp_path: Path) -> Path:
    repo = Repository.init(
        LocalBackend(tmp_path / "repo"), PASS, params=SMALL, pack_bytes=1 << 20, cost=FAST
    )
    repo.add_recovery_key()
    return tmp_path / "repo"


def _open(path: Path) -> Any:
    return lambda: Repository.open(LocalBackend(path), passphrase=PASS)


def test_archive_leaves_a_stub_and_a_template_and_restore_brings_every_byte_back(
    driver: VsphereDriver, vm: VmInfo, repo_path: Path, tmp_path: Path
) -> None:
    files = VsphereFiles(driver)
    before = _contents(files, vm)
    hardware = files.hardware(vm)
    assert sum(len(b) for b in before.values()) > 3_000_000
    store = VmStore(tmp_path / "vm.sqlite")
    archiver = Archiver(store, tmp_path, lambda: NOW)
    reports: list[tuple[float, str]] = []
    record = archiver.archive(
        "vc", vm, files, ArchiveRules(), _open(repo_path), lambda f, d: reports.append((f, d))
    )

    assert record.size_before == sum(len(b) for b in before.values())
    assert 0 < record.stored_bytes < record.size_before
    assert files.fenced(vm)  # a template: vCenter refuses to power it on
    stub = Stub.loads(files.read_stub(vm) or b"")
    assert stub.snapshot == record.snapshot
    assert all(files.stat(_file(files, vm, name)) is None for name in before)
    assert stub.snapshot in Repository.open(LocalBackend(repo_path), passphrase=PASS).pins()
    life = archiver.journal.life("vc", vm.native_id)
    assert life is not None
    assert life[0] == LifeState.ARCHIVED
    assert reports
    assert reports[-1][0] == 1.0
    assert "MB/s" in reports[-1][1]
    with pytest.raises(Exception, match="template"):
        driver.power(vm, PowerAction.POWER_ON)

    archiver.restore("vc", vm, files, _open(repo_path))
    assert not files.fenced(vm)
    assert files.read_stub(vm) is None
    assert _contents(files, vm) == before
    assert files.hardware(vm) == hardware
    life = archiver.journal.life("vc", vm.native_id)
    assert life is not None
    assert life[0] == LifeState.OFF
    assert life[2] is not None
    assert life[2].restore_count == 1
    files.close()


def _file(files: VsphereFiles, vm: VmInfo, name: str) -> Any:
    from dockyard.agent.modules.vm.vmfiles import VmFile
    from dockyard.agent.protocol.vm import FileRole

    folder = files._folder(files._ref(vm))
    return VmFile(name, f"[{folder.datastore}] {folder.path}/{name}", FileRole.OTHER, 0)


def test_a_vm_changed_between_read_and_delete_keeps_every_file(
    driver: VsphereDriver, vm: VmInfo, repo_path: Path, tmp_path: Path
) -> None:
    files = VsphereFiles(driver)
    before = _contents(files, vm)
    store = VmStore(tmp_path / "vm.sqlite")
    archiver = Archiver(store, tmp_path, lambda: NOW)
    real_verify = archiver._verify

    def verify_then_change(job: Any, open_repo: Any) -> None:
        real_verify(job, open_repo)
        disk = next(f for f in job.manifest.files if f.role == "disk")
        grown = vm_like(3_100_000, 9)
        files.ds.write(DatastorePath.parse(disk.source), "DC0", io.BytesIO(grown), len(grown))

    archiver._verify = verify_then_change  # type: ignore[method-assign]
    with pytest.raises(ArchiveFailed, match="changed since it was read") as failed:
        archiver.archive("vc", vm, files, ArchiveRules(), _open(repo_path))
    assert failed.value.code == "vm_changed"
    after = _contents(files, vm)
    assert after.keys() == before.keys()  # nothing deleted
    assert files.read_stub(vm) is None
    assert not files.fenced(vm)
    life = archiver.journal.life("vc", vm.native_id)
    assert life is not None
    assert life[0] == LifeState.ARCHIVE_FAILED
    assert archiver.journal.job("vc", vm.native_id) is None
    assert not Repository.open(LocalBackend(repo_path), passphrase=PASS).pins()


def test_a_single_key_slot_refuses_before_anything_is_touched(
    driver: VsphereDriver, vm: VmInfo, tmp_path: Path
) -> None:
    Repository.init(LocalBackend(tmp_path / "one"), PASS, params=SMALL, cost=FAST)
    files = VsphereFiles(driver)
    archiver = Archiver(VmStore(tmp_path / "vm.sqlite"), tmp_path, lambda: NOW)
    with pytest.raises(ArchiveFailed, match="recovery key") as failed:
        archiver.archive("vc", vm, files, ArchiveRules(), _open(tmp_path / "one"))
    assert failed.value.code == "single_key_slot"
    assert not files.fenced(vm)
    assert files.read_stub(vm) is None


def test_restore_refuses_a_tampered_stub_and_a_stub_whose_snapshot_was_pruned(
    driver: VsphereDriver, vm: VmInfo, repo_path: Path, tmp_path: Path
) -> None:
    files = VsphereFiles(driver)
    archiver = Archiver(VmStore(tmp_path / "vm.sqlite"), tmp_path, lambda: NOW)
    archiver.archive("vc", vm, files, ArchiveRules(), _open(repo_path))
    good = files.read_stub(vm) or b""
    files.write_stub(vm, good.replace(b'"vm_name": "', b'"vm_name": "x'))
    with pytest.raises(ArchiveFailed) as failed:
        archiver.restore("vc", vm, files, _open(repo_path))
    assert failed.value.code == "stub_tampered"
    assert files.read_stub(vm) is not None
    assert files.fenced(vm)

    files.write_stub(vm, good)
    snapshot = Stub.loads(good).snapshot
    (repo_path / "snapshots" / snapshot).unlink()
    with pytest.raises(ArchiveFailed) as failed:
        archiver.restore("vc", vm, files, _open(repo_path))
    assert failed.value.code == "stub_orphaned"
    assert STUB_NAME


class _FullBackend(LocalBackend):
    """The repository's disk fills after a few objects: a real OSError(ENOSPC) from the
    back end's write, as a full file system gives it."""

    def __init__(self, root: Path, room: int) -> None:
        super().__init__(root)
        self.room = room

    def put(self, key: str, data: bytes) -> None:
        if key.startswith("data/"):
            self.room -= 1
            if self.room < 0:
                raise OSError(28, "No space left on device", key)
        super().put(key, data)


def test_a_repository_that_fills_mid_archive_leaves_the_vm_whole_and_unfenced(
    driver: VsphereDriver, vm: VmInfo, repo_path: Path, tmp_path: Path
) -> None:
    files = VsphereFiles(driver)
    before = _contents(files, vm)
    archiver = Archiver(VmStore(tmp_path / "vm.sqlite"), tmp_path, lambda: NOW)

    def open_full() -> Repository:
        return Repository.open(_FullBackend(repo_path, 1), passphrase=PASS)

    with pytest.raises(ArchiveFailed, match="No space left") as failed:
        archiver.archive("vc", vm, files, ArchiveRules(), open_full)
    assert failed.value.code == "repository_full"
    assert _contents(files, vm) == before
    assert not files.fenced(vm)
    assert files.read_stub(vm) is None
    life = archiver.journal.life("vc", vm.native_id)
    assert life is not None
    assert life[0] == LifeState.ARCHIVE_FAILED
    assert "repository_full" in (life[1] or "")


class _FillsOnSecondFile(VsphereFiles):
    """The datastore answers 'full' on the second file written back: the error the
    datastore service gives (507), raised where the real client raises it."""

    writes = 0

    def write(self, f: Any, produce: Any) -> None:
        type(self).writes += 1
        if type(self).writes == 2:
            raise DriverError("datastore_full", f"datastore {f.source} is full")
        super().write(f, produce)


def test_a_datastore_that_fills_mid_restore_keeps_the_stub_and_removes_the_copies(
    driver: VsphereDriver, vm: VmInfo, repo_path: Path, tmp_path: Path
) -> None:
    files = VsphereFiles(driver)
    archiver = Archiver(VmStore(tmp_path / "vm.sqlite"), tmp_path, lambda: NOW)
    record = archiver.archive("vc", vm, files, ArchiveRules(), _open(repo_path))
    names = [f.name for f in archiver.journal.jobs()] or None
    assert names is None  # the archive's job is closed
    filling = _FillsOnSecondFile(driver)
    with pytest.raises(ArchiveFailed, match="full") as failed:
        archiver.restore("vc", vm, filling, _open(repo_path))
    assert failed.value.code == "datastore_full"
    assert files.read_stub(vm) is not None  # still archived: the archive is the VM
    assert files.fenced(vm)
    manifest_files = Stub.loads(files.read_stub(vm) or b"").files
    assert manifest_files >= 2
    folder = files._folder(files._ref(vm))
    for name in ("DC0_C0_RP0_VM0.vmx", "disk1-flat.vmdk"):
        where = DatastorePath(folder.datastore, f"{folder.path}/{name}")
        assert files._stat(where, "DC0") is None  # the copy written before the error: gone
    archiver.restore("vc", vm, files, _open(repo_path))  # room again: it goes through
    assert files.read_stub(vm) is None
    assert record.snapshot


def test_a_restore_asked_twice_at_once_is_refused_and_changes_nothing(
    driver: VsphereDriver, vm: VmInfo, repo_path: Path, tmp_path: Path
) -> None:
    files = VsphereFiles(driver)
    archiver = Archiver(VmStore(tmp_path / "vm.sqlite"), tmp_path, lambda: NOW)
    archiver.archive("vc", vm, files, ArchiveRules(), _open(repo_path))
    other = Archiver(VmStore(tmp_path / "vm.sqlite"), tmp_path, lambda: NOW)
    with (
        archiver.exclusive("vc", vm.native_id, "restore"),
        pytest.raises(ArchiveFailed, match="another archive or restore") as busy,
    ):
        other.restore("vc", vm, files, _open(repo_path))
    assert busy.value.code == "busy"
    assert files.read_stub(vm) is not None
    assert files.fenced(vm)
    other.restore("vc", vm, files, _open(repo_path))
    assert files.read_stub(vm) is None


def test_an_endpoint_lost_mid_read_keeps_the_vm_whole_and_lifts_the_fence_once_back(
    sim: Vcsim, driver: VsphereDriver, vm: VmInfo, repo_path: Path, tmp_path: Path
) -> None:
    """vCenter drops off the network in the middle of a disk's download (a real reset on a
    real connection): the archive fails clearly, nothing is deleted, and the fence the roll
    back could not lift then is lifted by the next round once vCenter answers again."""
    files = VsphereFiles(driver)
    before = _contents(files, vm)
    cutter = Cutter(sim.host, sim.port)
    far = open_driver("vc", {"kind": "vsphere", **sim.config(port=cutter.port)})
    assert isinstance(far, VsphereDriver)
    far_files = VsphereFiles(far)
    archiver = Archiver(VmStore(tmp_path / "vm.sqlite"), tmp_path, lambda: NOW)
    try:
        far_files.files(vm)  # log in and learn the layout before the cut is armed
        cutter.cut_after(1_500_000)  # inside the first 3 MB disk
        with pytest.raises(ArchiveFailed, match="lost the connection|reading") as failed:
            archiver.archive("vc", vm, far_files, ArchiveRules(), _open(repo_path))
        assert failed.value.code == "endpoint_unreachable"
        assert cutter.cuts == 1
        assert "still kept from powering on" in str(
            (archiver.journal.life("vc", vm.native_id) or (None, ""))[1]
        )

        # Seen from a path that still reaches vCenter: whole, fenced, no stub, no pin.
        assert _contents(files, vm) == before
        assert files.fenced(vm)
        assert files.read_stub(vm) is None
        assert not Repository.open(LocalBackend(repo_path), passphrase=PASS).pins()
        (job,) = archiver.unsettled()
        with pytest.raises(ArchiveFailed, match="does not answer yet"):
            archiver.settle(vm, far_files, job)  # still cut: nothing changes
        assert files.fenced(vm)

        cutter.mend()
        archiver.settle(vm, far_files, job)
        assert not files.fenced(vm)
        assert archiver.unsettled() == []
        assert archiver.journal.job("vc", vm.native_id) is None
        assert _contents(files, vm) == before
        life = archiver.journal.life("vc", vm.native_id)
        assert life is not None
        assert life[0] == LifeState.ARCHIVE_FAILED
    finally:
        far_files.close()
        far.close()
        cutter.close()
        files.close()


def _disk_paths(files: VsphereFiles, vm: VmInfo) -> list[str]:
    return sorted(str(d[0]) for d in files.hardware(vm)["disks"])


def test_a_restore_to_another_datastore_writes_the_disks_there_and_repoints_the_vm(
    driver: VsphereDriver, vm: VmInfo, repo_path: Path, tmp_path: Path
) -> None:
    files = VsphereFiles(driver)
    before = _contents(files, vm)
    own = {f.name: f for f in files.files(vm)[0]}
    (home,) = files.hardware(vm)["datastores"]
    other = next(name for name in files.places(vm) if name != home)
    archiver = Archiver(VmStore(tmp_path / "vm.sqlite"), tmp_path, lambda: NOW)
    archiver.archive("vc", vm, files, ArchiveRules(), _open(repo_path))

    with pytest.raises(ArchiveFailed, match="only to their own datastore") as refused:
        archiver.restore("vc", vm, files, _open(repo_path), place=other, rule=RestorePlace.ORIGINAL)
    assert refused.value.code == "refused_by_policy"
    with pytest.raises(ArchiveFailed, match="no datastore") as unknown:
        archiver.restore("vc", vm, files, _open(repo_path), place="NoSuchDS")
    assert unknown.value.code == "datastore_not_found"
    assert files.read_stub(vm) is not None  # refused before anything was written
    assert archiver.journal.job("vc", vm.native_id) is None

    archiver.restore("vc", vm, files, _open(repo_path), place=other)
    assert files.read_stub(vm) is None
    assert not files.fenced(vm)
    assert all(p.startswith(f"[{other}] ") for p in _disk_paths(files, vm))
    assert sorted(files.hardware(vm)["datastores"]) == sorted({home, other})
    # Every byte back, the disks read from where they went (a disk outside the VM's
    # folder is named external/<datastore>/..., as any VM's second-datastore disk is).
    after = {name.rsplit("/", 1)[-1]: data for name, data in _contents(files, vm).items()}
    assert after == before
    moved = [f for f in files.files(vm)[0] if f.role == "disk"]
    assert moved
    assert all(f.source.startswith(f"[{other}] ") for f in moved)
    assert all(f.name == f"external/{other}/{f.source.split('] ', 1)[1]}" for f in moved)
    assert all(own[f.name.rsplit("/", 1)[-1]].source.startswith(f"[{home}] ") for f in moved)
    files.close()


class _HomeFull(VsphereFiles):
    """The VM's own datastore reports 50 kB free, room for its configuration but not its
    disks (vcsim's free space cannot be set): the answer `summary.freeSpace` gives on a
    real full datastore, given where the engine reads it."""

    home = ""

    def free_bytes(self, f: Any) -> int | None:
        if DatastorePath.parse(f.source).datastore == self.home:
            return 50_000
        return super().free_bytes(f)

    def places(self, vm: VmInfo) -> dict[str, int]:
        return {k: (50_000 if k == self.home else v) for k, v in super().places(vm).items()}


def test_a_full_datastore_sends_the_disks_to_one_with_room_unless_the_policy_says_no(
    driver: VsphereDriver, vm: VmInfo, repo_path: Path, tmp_path: Path
) -> None:
    files = _HomeFull(driver)
    before = _contents(files, vm)
    (files.home,) = files.hardware(vm)["datastores"]
    archiver = Archiver(VmStore(tmp_path / "vm.sqlite"), tmp_path, lambda: NOW)
    archiver.archive("vc", vm, files, ArchiveRules(), _open(repo_path))

    with pytest.raises(ArchiveFailed, match=r"LocalDS_0 has .* free, the VM needs") as full:
        archiver.restore("vc", vm, files, _open(repo_path), rule=RestorePlace.ORIGINAL)
    assert full.value.code == "datastore_full"
    assert files.read_stub(vm) is not None

    archiver.restore("vc", vm, files, _open(repo_path))
    assert not any(p.startswith(f"[{files.home}] ") for p in _disk_paths(files, vm))
    after = {name.rsplit("/", 1)[-1]: data for name, data in _contents(files, vm).items()}
    assert after == before
    files.close()


def test_a_repository_unreachable_mid_archive_and_at_restore_is_a_clear_error(
    driver: VsphereDriver, vm: VmInfo, seaweed: Any, tmp_path: Path
) -> None:
    """Issue 17 point 8: the tenant's S3 repository (SeaweedFS) drops off the network in the
    middle of the archive's uploads (a real reset through the cutter, then refused), and
    again when a restore is asked: each is a clear repository_unreachable, the VM whole
    and unfenced after the archive, still archived (stub and fence) after the restore."""
    from ..peers.seaweed import ACCESS_KEY, SECRET_KEY

    bucket = f"archive-{uuid.uuid4().hex[:8]}"
    seaweed.client().create_bucket(Bucket=bucket)
    host, port = seaweed.endpoint.removeprefix("http://").rsplit(":", 1)
    cutter = Cutter(host, int(port))

    def backend(endpoint: str) -> S3Backend:
        return S3Backend(
            bucket, endpoint_url=endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY
        )

    far = backend(f"http://127.0.0.1:{cutter.port}")
    Repository.init(far, PASS, params=SMALL, pack_bytes=1 << 20, cost=FAST)
    Repository.open(far, passphrase=PASS).add_recovery_key()
    opened = Repository.open(far, passphrase=PASS)  # the key unlocked before the cut
    files = VsphereFiles(driver)
    before = _contents(files, vm)
    archiver = Archiver(VmStore(tmp_path / "vm.sqlite"), tmp_path, lambda: NOW)
    try:
        cutter.cut_after(1)  # the first answer S3 gives the archive: a pack's upload
        with pytest.raises(ArchiveFailed) as failed:
            archiver.archive("vc", vm, files, ArchiveRules(), lambda: opened)
        assert failed.value.code == "repository_unreachable", failed.value
        assert cutter.cuts == 1
        assert _contents(files, vm) == before
        assert not files.fenced(vm)
        assert files.read_stub(vm) is None
        assert archiver.journal.job("vc", vm.native_id) is None

        cutter.mend()
        archiver.archive(
            "vc", vm, files, ArchiveRules(), lambda: Repository.open(far, passphrase=PASS)
        )
        assert files.read_stub(vm) is not None
        cutter.cut_after(1)
        with pytest.raises(ArchiveFailed) as unreachable:
            archiver.restore("vc", vm, files, lambda: Repository.open(far, passphrase=PASS))
        assert unreachable.value.code == "repository_unreachable", unreachable.value
        assert files.read_stub(vm) is not None  # still archived, nothing written
        assert files.fenced(vm)
        life = archiver.journal.life("vc", vm.native_id)
        assert life is not None
        assert life[0] == LifeState.RESTORE_FAILED
        cutter.mend()
        archiver.restore("vc", vm, files, lambda: Repository.open(far, passphrase=PASS))
        assert _contents(files, vm) == before
    finally:
        cutter.close()
        files.close()
