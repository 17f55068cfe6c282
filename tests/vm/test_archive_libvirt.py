"""Archive and restore of a KVM/QEMU domain on Debian's libvirt daemon (TCG), its disk a
qcow2 image over a backing file made by qemu-img: the top image is archived and removed,
the backing file (another image's) stays, the domain stays defined and fenced, and the
restore brings the top image back byte for byte and starts the domain."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dockyard.agent.modules.vm.archive import ArchiveFailed, Archiver
from dockyard.agent.modules.vm.drivers import open_driver
from dockyard.agent.modules.vm.drivers.base import VmInfo
from dockyard.agent.modules.vm.drivers.libvirt import LibvirtDriver
from dockyard.agent.modules.vm.store import VmStore
from dockyard.agent.modules.vm.vmfiles.libvirt import LibvirtFiles
from dockyard.agent.protocol.vm import ArchiveRules, LifeState
from dockyard.agent.vault.backends import LocalBackend
from dockyard.agent.vault.repository import Repository
from dockyard.cloud.store.db import Database

from ..peers.libvirt_qemu import URI
from ..procs import Cloud
from ..vault.conftest import FAST, PASS, SMALL
from .libvirt_domains import other_pool, qcow2_domain
from .reports_check import archive_and_restore_reach_graphql, archiving_module, docked

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@pytest.fixture
def domain() -> Iterator[tuple[Any, Path, Path]]:
    with qcow2_domain() as made:
        yield made


def _opened(dom: Any) -> tuple[LibvirtDriver, VmInfo]:
    """The local daemon's driver, and the domain as its discovery sees it."""
    driver = open_driver("kvm", {"kind": "libvirt", "hosts": [{"name": "local", "uri": URI}]})
    assert isinstance(driver, LibvirtDriver)
    return driver, next(v for v in driver.discover().vms if v.native_id == dom.UUIDString())


@pytest.fixture
def open_repo(tmp_path: Path) -> Callable[[], Repository]:
    """A new repository with a second key slot (archiving needs one); opens it anew."""
    repo = tmp_path / "repo"
    Repository.init(LocalBackend(repo), PASS, params=SMALL, pack_bytes=1 << 20, cost=FAST)
    Repository.open(LocalBackend(repo), passphrase=PASS).add_recovery_key()
    return lambda: Repository.open(LocalBackend(repo), passphrase=PASS)


def test_a_qcow2_domain_is_archived_its_backing_file_kept_and_restored_and_started(
    domain: tuple[Any, Path, Path], tmp_path: Path, open_repo: Callable[[], Repository]
) -> None:
    dom, top, base = domain
    top_bytes, base_bytes = top.read_bytes(), base.read_bytes()
    driver, vm = _opened(dom)
    files = LibvirtFiles(driver)
    own, external = files.files(vm)
    assert [f.source for f in own if f.role == "disk"] == [str(top)]
    assert [x.source for x in external] == [str(base)]
    archiver = Archiver(VmStore(tmp_path / "vm.sqlite"), tmp_path, lambda: NOW)
    record = archiver.archive("kvm", vm, files, ArchiveRules(), open_repo)
    assert record.size_before >= len(top_bytes)
    assert not top.exists()
    assert base.read_bytes() == base_bytes  # another image's backing file: never removed
    assert files.read_stub(vm) is not None
    assert files.fenced(vm)
    assert not dom.autostart()
    with pytest.raises(Exception, match=r"top\.qcow2|No such file"):
        dom.create()  # nothing left it can boot from

    with pytest.raises(ArchiveFailed, match="no datastore|no other datastore") as elsewhere:
        archiver.restore("kvm", vm, files, open_repo, place="no-such-pool")
    assert elsewhere.value.code == "datastore_not_found"
    assert files.read_stub(vm) is not None  # refused before anything was written
    assert not top.exists()

    archiver.restore("kvm", vm, files, open_repo)
    assert top.read_bytes() == top_bytes
    assert files.read_stub(vm) is None
    assert not files.fenced(vm)
    assert dom.autostart()
    files.power_on(vm)
    assert dom.isActive()
    driver.close()


def test_a_restore_to_another_storage_pool_moves_the_disk_and_its_stub_and_boots(
    domain: tuple[Any, Path, Path], tmp_path: Path, open_repo: Callable[[], Repository]
) -> None:
    """The top image goes to a second directory pool of the host, the domain is redefined
    to name it there (its backing file stays where it is, named by its absolute path), and
    the domain starts from it."""
    dom, top, _base = domain
    top_bytes = top.read_bytes()
    driver = open_driver("kvm", {"kind": "libvirt", "hosts": [{"name": "local", "uri": URI}]})
    assert isinstance(driver, LibvirtDriver)
    with other_pool(dom, top) as other:
        try:
            vm = next(v for v in driver.discover().vms if v.native_id == dom.UUIDString())
            files = LibvirtFiles(driver)
            archiver = Archiver(VmStore(tmp_path / "vm.sqlite"), tmp_path, lambda: NOW)
            archiver.archive("kvm", vm, files, ArchiveRules(), open_repo)
            assert not top.exists()
            assert other.name in files.places(vm)

            archiver.restore("kvm", vm, files, open_repo, place=other.name)
            moved = other / top.name
            assert moved.read_bytes() == top_bytes
            assert not top.exists()
            assert [f.source for f in files.files(vm)[0] if f.role == "disk"] == [str(moved)]
            assert files.read_stub(vm) is None
            assert not list(other.glob("*stub*"))
            assert not list(top.parent.glob("*stub*"))
            assert not files.fenced(vm)
            files.power_on(vm)
            assert dom.isActive()
            dom.destroy()
        finally:
            driver.close()


def test_a_libvirt_domain_s_archive_figures_reach_graphql_through_the_module(
    domain: tuple[Any, Path, Path], tmp_path: Path, cloud: Cloud, pg: Database
) -> None:
    """Issue 17 point 9 on KVM, and the module's archive feature driving libvirt (an
    endpoint of kind libvirt gets its LibvirtFiles): the date, size before, bytes stored
    and restore count it sends up are what GraphQL gives, archived and restored."""
    dom, top, _ = domain
    top_bytes = top.read_bytes()
    repo = tmp_path / "repo"
    Repository.init(LocalBackend(repo), PASS, params=SMALL, pack_bytes=1 << 20, cost=FAST)
    Repository.open(LocalBackend(repo), passphrase=PASS).add_recovery_key()
    config = {"kind": "libvirt", "hosts": [{"name": "local", "uri": URI}]}
    module = archiving_module(tmp_path / "vm", "kvm", config, repo, NOW)
    gql, tenant = docked(module, cloud, pg, tmp_path)
    try:
        back, record = archive_and_restore_reach_graphql(
            module, gql, tenant, "kvm", dom.UUIDString(), dom.name()
        )
        assert record.size_before >= len(top_bytes)
        assert top.read_bytes() == top_bytes
        assert dom.isActive()  # powered on after the restore, as the policy says
        assert [s["nativeId"] for s in back["sightings"]] == [dom.UUIDString()]
    finally:
        module.close()


def test_a_domain_started_or_given_a_disk_between_read_and_delete_keeps_every_file(
    domain: tuple[Any, Path, Path], tmp_path: Path, open_repo: Callable[[], Repository]
) -> None:
    """Issue 17 point 8 on a real daemon: after the archive is verified and before the
    first delete, someone starts the domain (libvirt cannot refuse a start; the fence is
    ours), then, another time, adds a disk to its definition. Each is a clear vm_changed,
    nothing is deleted, the fence is lifted and the archive's pin released."""
    import libvirt

    dom, top, _ = domain
    top_bytes = top.read_bytes()
    driver, vm = _opened(dom)
    files = LibvirtFiles(driver)
    archiver = Archiver(VmStore(tmp_path / "vm.sqlite"), tmp_path, lambda: NOW)
    real_verify = archiver._verify
    extra = top.with_name("added.qcow2")

    def start(job: Any, opened: Any) -> None:
        real_verify(job, opened)
        dom.create()

    def add_disk(job: Any, opened: Any) -> None:
        real_verify(job, opened)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(extra), "1M"], check=True)
        dom.attachDeviceFlags(
            "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source file='{extra}'/><target dev='vdb' bus='virtio'/></disk>",
            libvirt.VIR_DOMAIN_AFFECT_CONFIG,
        )

    try:
        for change, why in ((start, "is on or was unfenced"), (add_disk, r"added\.qcow2")):
            archiver._verify = change  # type: ignore[method-assign]
            with pytest.raises(ArchiveFailed, match=why) as failed:
                archiver.archive("kvm", vm, files, ArchiveRules(), open_repo)
            assert failed.value.code == "vm_changed"
            assert top.read_bytes() == top_bytes  # nothing deleted
            assert files.read_stub(vm) is None
            assert not files.fenced(vm)
            assert dom.autostart()  # the fence's autostart off is undone too
            assert not open_repo().pins()
            life = archiver.journal.life("kvm", vm.native_id)
            assert life is not None
            assert life[0] == LifeState.ARCHIVE_FAILED
            if dom.isActive():
                dom.destroy()
        assert extra.exists()
    finally:
        driver.close()


class _AnotherWriter(LibvirtFiles):
    """Another VM's growth on the pool the restore goes to, after the restore's plan found
    room and before its disk is written: the pool is left 1 MB, so the write itself meets
    the file system's own ENOSPC part way (only the filler is ours; the fault is the
    kernel's)."""

    filler: Path | None = None

    def prepare(self, f: Any) -> None:
        super().prepare(f)
        if self.filler is not None and not self.filler.exists():
            room = shutil.disk_usage(self.filler.parent).free
            self.filler.write_bytes(b"\0" * (room - (1 << 20)))


def test_a_pool_that_fills_mid_restore_keeps_the_stub_and_removes_the_partial_copy(
    domain: tuple[Any, Path, Path], tmp_path: Path, open_repo: Callable[[], Repository]
) -> None:
    """Issue 17 point 8 with a real full file system: the restore's target pool is an 8 MB
    tmpfs that fills while the top image is written. A clear datastore_full; the stub and
    fence stand, the domain still names the archived path, no partial file is left; once
    there is room the restore goes through."""
    dom, top, _ = domain
    top_bytes = top.read_bytes()
    driver, vm = _opened(dom)
    files = _AnotherWriter(driver)
    archiver = Archiver(VmStore(tmp_path / "vm.sqlite"), tmp_path, lambda: NOW)
    archiver.archive("kvm", vm, files, ArchiveRules(), open_repo)
    with other_pool(dom, top) as other:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8M", "tmpfs", str(other)], check=True)
        try:
            files.filler = other / "another-vm.raw"
            with pytest.raises(ArchiveFailed, match="No space left") as full:
                archiver.restore("kvm", vm, files, open_repo, place=other.name)
            assert full.value.code == "datastore_full"
            assert sorted(p.name for p in other.iterdir()) == ["another-vm.raw"]  # no partial
            assert files.read_stub(vm) is not None
            assert files.fenced(vm)
            assert files.hardware(vm)["disks"] == [("vda", str(top))]  # not repointed
            life = archiver.journal.life("kvm", vm.native_id)
            assert life is not None
            assert life[0] == LifeState.RESTORE_FAILED

            files.filler.unlink()  # room again
            files.filler = None
            archiver.restore("kvm", vm, files, open_repo, place=other.name)
            assert (other / top.name).read_bytes() == top_bytes
            assert files.read_stub(vm) is None
        finally:
            driver.close()
            subprocess.run(["umount", str(other)], check=False)
