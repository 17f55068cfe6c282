"""Kill -9 at every step of archive and restore; the VM is always whole in one place.

Each case archives (or archives, then restores) one vcsim VM in a child process that
kills itself at one named point (`ARCHIVE_POINTS`, `RESTORE_POINTS`), asserts the kill
happened, checks that every file of the VM is whole on the datastore or in the archive
(read back from the repository and compared byte for byte), then runs the job again and
checks it finishes: archived with its stub, or restored with every byte back.

A libvirt restore to another storage pool is killed where libvirt's code differs from
vSphere's (`LIBVIRT_CASES`): its repoint is not one call but three steps (the stub copied
beside the moved disk, the domain redefined, the old stub removed), against vSphere's one
ReconfigVM, and its stub is a file that moves with the first disk, where vSphere's stays
in the VM's folder. So: after the write (the disk in the new pool, the domain still
naming the old path, the stub in the old folder), inside the repoint (the stub in both
folders, the domain not yet redefined), and after the re-registration (the domain
redefined, the stub moved, nothing compared yet). The write itself is the engine's, shared
with vSphere, whose cases cover it; each libvirt case costs a real domain (about 7 s).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dockyard.agent.modules.vm.archive import (
    ARCHIVE_POINTS,
    REPOINT_POINT,
    RESTORE_POINTS,
    Archiver,
)
from dockyard.agent.modules.vm.datastore import DatastorePath
from dockyard.agent.modules.vm.drivers import open_driver
from dockyard.agent.modules.vm.drivers.base import VmInfo
from dockyard.agent.modules.vm.drivers.libvirt import LibvirtDriver
from dockyard.agent.modules.vm.drivers.vsphere import VsphereDriver
from dockyard.agent.modules.vm.store import VmStore
from dockyard.agent.modules.vm.stub import STUB_NAME, Stub
from dockyard.agent.modules.vm.vmfiles.libvirt import LibvirtFiles
from dockyard.agent.modules.vm.vmfiles.vsphere import VsphereFiles
from dockyard.agent.protocol.vm import ArchiveRules, PowerAction
from dockyard.agent.vault.backends import LocalBackend
from dockyard.agent.vault.repository import Repository

from ..peers.libvirt_qemu import URI
from ..peers.vsphere_sim import Vcsim
from ..vault.conftest import FAST, PASS, SMALL, vm_like
from .libvirt_domains import other_pool, qcow2_domain

ROOT = Path(__file__).resolve().parents[2]
CASES = (
    [("archive", p) for p in ARCHIVE_POINTS]
    + [("restore", p) for p in RESTORE_POINTS]
    + [("restore-elsewhere", p) for p in RESTORE_POINTS]
)
LIBVIRT_CASES = ("restore_after_write", REPOINT_POINT, "restore_after_register")
"""Where a libvirt restore to another pool is killed (why these: the module's doc)."""
ELSEWHERE = "LocalDS_1"
"""Where the restore-elsewhere cases write the disks (vcsim's second datastore)."""
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def sim() -> Iterator[Vcsim]:
    server = Vcsim(host=1, vm=len(CASES), ds=2).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def vms(sim: Vcsim) -> Iterator[list[VmInfo]]:
    driver = open_driver("vc", {"kind": "vsphere", **sim.config()})
    assert isinstance(driver, VsphereDriver)
    try:
        yield sorted(driver.discover().vms, key=lambda v: v.native_id)
    finally:
        driver.close()


def _child(mode: str, sim: Vcsim, vm: VmInfo, repo: Path, state: Path, crash: str | None) -> int:
    args = [mode, json.dumps(sim.config()), vm.native_id, str(repo), str(state)]
    return _run("tests.vm.archive_child", args, crash)


def _run(child: str, args: list[str], crash: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "DOCKYARD_CRASH_AT"}
    if crash:
        env["DOCKYARD_CRASH_AT"] = crash
    done = subprocess.run(
        [sys.executable, "-m", child, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, -signal.SIGKILL), done.stderr[-3000:]
    return done.returncode


def _contents(files: VsphereFiles, vm: VmInfo, names: dict[str, str]) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for name, source in names.items():
        where = DatastorePath.parse(source)
        try:
            with files.ds.reader(where, "DC0") as stream:
                out[name] = stream.read()
        except Exception:
            out[name] = None
    return out


def _in_archive(repo: Path, vm: VmInfo) -> dict[str, bytes] | None:
    """The VM's files as the newest whole archive snapshot of it holds them."""
    opened = Repository.open(LocalBackend(repo), passphrase=PASS)
    mine = [s for s in opened.snapshots() if s.meta.get("vm") == vm.native_id]
    if not mine:
        return None
    newest = max(mine, key=lambda s: s.time)
    out = {}
    for f in newest.files:
        sink = io.BytesIO()
        opened.restore_stream(newest.id, f.path, sink)
        out[f.path] = sink.getvalue()
    return out


@pytest.mark.parametrize(("mode", "point"), CASES)
def test_a_kill_at_every_step_leaves_the_vm_whole_and_the_next_run_finishes(
    sim: Vcsim, vms: list[VmInfo], tmp_path: Path, mode: str, point: str
) -> None:
    vm = vms[CASES.index((mode, point))]
    driver = open_driver("vc", {"kind": "vsphere", **sim.config()})
    assert isinstance(driver, VsphereDriver)
    files = VsphereFiles(driver)
    driver.power(vm, PowerAction.POWER_OFF)
    own, _ = files.files(vm)
    names = {f.name: f.source for f in own}
    for n, f in enumerate(own):
        data = vm_like(2_500_000, n + 7) if f.role == "disk" else f"{f.name}\n".encode() * 99
        files.ds.write(DatastorePath.parse(f.source), "DC0", io.BytesIO(data), len(data))
    before = _contents(files, vm, names)
    repo = tmp_path / "repo"
    _repo(repo)
    state = tmp_path / "state"
    state.mkdir()

    if mode.startswith("restore"):
        assert _child("archive", sim, vm, repo, state, None) == 0
    assert _child(mode, sim, vm, repo, state, point) == -signal.SIGKILL, f"{point} not reached"

    on_datastore = _contents(files, vm, names)
    archived = _in_archive(repo, vm)
    whole_here = on_datastore == before
    whole_there = archived is not None and all(archived.get(k) == v for k, v in before.items())
    assert whole_here or whole_there, f"after a kill at {point} the VM is whole nowhere"

    assert _child(mode, sim, vm, repo, state, None) == 0
    if mode == "archive":
        stub = Stub.loads(files.read_stub(vm) or b"")
        assert all(v is None for v in _contents(files, vm, names).values())
        restored = _in_archive(repo, vm)
        assert restored is not None
        assert all(restored[k] == v for k, v in before.items())
        assert stub.snapshot in Repository.open(LocalBackend(repo), passphrase=PASS).pins()
    elif mode == "restore":
        assert _contents(files, vm, names) == before
        assert files.read_stub(vm) is None
        assert not files.fenced(vm)
    else:  # every disk on the other datastore, every byte back, nothing left half-written
        now = {f.name.rsplit("/", 1)[-1]: f.source for f in files.files(vm)[0]}
        assert _contents(files, vm, now) == before
        disks = [f for f in files.files(vm)[0] if f.role == "disk"]
        assert disks
        assert all(f.source.startswith(f"[{ELSEWHERE}] ") for f in disks)
        assert all(
            _contents(files, vm, {f.name: names[n]})[f.name] is None
            for f in disks
            for n in [f.name.rsplit("/", 1)[-1]]
        )
        assert files.read_stub(vm) is None
        assert not files.fenced(vm)
    files.close()
    driver.close()


def _repo(path: Path) -> Repository:
    Repository.init(LocalBackend(path), PASS, params=SMALL, pack_bytes=1 << 20, cost=FAST)
    opened = Repository.open(LocalBackend(path), passphrase=PASS)
    opened.add_recovery_key()
    return opened


@pytest.mark.parametrize("point", LIBVIRT_CASES)
def test_a_kill_in_a_libvirt_restore_to_another_pool_leaves_the_domain_restorable(
    tmp_path: Path, point: str
) -> None:
    """Archived in this process, restored to a second directory pool by a child killed at
    `point`: the journal is where the kill says, a stub still stands beside the disks the
    domain names and the archive is whole; the next run finishes with the top image
    byte for byte in the other pool, the domain redefined there and booting, and no stub
    left in either folder."""
    with qcow2_domain() as (dom, top, base), other_pool(dom, top) as other:
        top_bytes, base_bytes = top.read_bytes(), base.read_bytes()
        config = {"kind": "libvirt", "hosts": [{"name": "local", "uri": URI}]}
        driver = open_driver("kvm", config)
        assert isinstance(driver, LibvirtDriver)
        files = LibvirtFiles(driver)
        vm = next(v for v in driver.discover().vms if v.native_id == dom.UUIDString())
        repo, state = tmp_path / "repo", tmp_path / "state"
        state.mkdir()
        _repo(repo)
        store = VmStore(state / "vm.sqlite")
        archiver = Archiver(store, state, lambda: datetime.now(UTC))
        archiver.archive(
            "kvm",
            vm,
            files,
            ArchiveRules(),
            lambda: Repository.open(LocalBackend(repo), passphrase=PASS),
        )
        assert not top.exists()
        store.close()
        where = json.dumps({**config, "place": other.name})
        args = ["restore-elsewhere", where, vm.native_id, str(repo), str(state)]
        child = "tests.vm.archive_child"

        assert _run(child, args, point) == -signal.SIGKILL, f"{point} not reached"
        job = Archiver(VmStore(state / "vm.sqlite"), state, lambda: NOW).journal.job(
            "kvm", vm.native_id
        )
        assert job is not None
        assert job.step == ("registered" if point == "restore_after_register" else "written")
        stub = files.read_stub(vm)  # beside the disk the domain names now
        assert stub is not None, f"after a kill at {point} no stub stands"
        copies = {f.parent for folder in (top.parent, other) for f in folder.glob(f"*{STUB_NAME}")}
        # Inside the repoint the stub stands in both folders; after it, beside the moved disk.
        assert (
            copies
            == {
                "restore_after_write": {top.parent},
                REPOINT_POINT: {top.parent, other},
                "restore_after_register": {other},
            }[point]
        )
        snapshot = Stub.loads(stub).snapshot
        sink = io.BytesIO()
        Repository.open(LocalBackend(repo), passphrase=PASS).restore_stream(
            snapshot, f"disks/{top.name}", sink
        )
        assert sink.getvalue() == top_bytes  # the archive still holds the VM whole
        # The fence comes off just before the repoint, the stub only once compared.
        assert files.fenced(vm) == (point == "restore_after_write")

        assert _run(child, args, None) == 0
        moved = other / top.name
        assert moved.read_bytes() == top_bytes
        assert base.read_bytes() == base_bytes
        assert [f.source for f in files.files(vm)[0] if f.role == "disk"] == [str(moved)]
        assert not list(other.glob(f"*{STUB_NAME}*"))
        assert not list(top.parent.glob(f"*{STUB_NAME}*"))
        assert files.read_stub(vm) is None
        assert not files.fenced(vm)
        assert dom.autostart()
        files.power_on(vm)  # it boots from the pool it was restored to
        assert dom.isActive()
        dom.destroy()
        files.close()
        driver.close()
