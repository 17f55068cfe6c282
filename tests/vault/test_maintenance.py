"""Retention, pins, prune, check and the lock protocol."""

from __future__ import annotations

import io
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from dockyard.agent.vault.backends import LocalBackend
from dockyard.agent.vault.errors import Locked, VaultError
from dockyard.agent.vault.locks import EXCLUSIVE, SHARED, Lock, clear_stale, list_locks
from dockyard.agent.vault.maintenance import check, prune
from dockyard.agent.vault.repository import Repository, Source
from dockyard.agent.vault.retention import Retention

from ..procs import BIN
from .conftest import PASS, vm_like


def source(name: str, data: bytes) -> Source:
    return Source(name, lambda: io.BytesIO(data), len(data))


class Snap:
    def __init__(self, id: str, time: str, pinned: bool = False, name: str = "vm") -> None:
        self.id, self.time, self.pinned, self.name, self.host = id, time, pinned, name, "h"


def test_retention_rules() -> None:
    snaps = [Snap(f"s{d:02}", f"2026-11-{d:02}T12:00:00+00:00") for d in range(1, 29)]
    assert Retention(keep_last=2).keep(snaps) == {"s28", "s27"}
    assert Retention(keep_daily=3).keep(snaps) == {"s28", "s27", "s26"}
    weekly = Retention(keep_weekly=2).keep(snaps)
    assert weekly == {"s28", "s22"}, "newest of this ISO week and of the one before"
    assert Retention(keep_monthly=5).keep(snaps) == {"s28"}
    pinned = [*snaps, Snap("old", "2020-01-01T00:00:00+00:00", pinned=True)]
    assert "old" in Retention(keep_last=1).keep(pinned)
    other = [*snaps, Snap("x", "2026-01-01T00:00:00+00:00", name="other-vm")]
    assert "x" in Retention(keep_last=1).keep(other), "each (host, name) keeps its own"
    with pytest.raises(VaultError):
        Retention()


def test_keep_last_one_leaves_a_pinned_snapshot_alone(repo: Repository, tmp_path: Path) -> None:
    data = [vm_like(700_000, 30 + i) for i in range(3)]
    snaps = [repo.store([source("disk.img", d)], name="vm-1")[0] for d in data]
    repo.pin(snaps[0].id, "archived VM stub points here")
    report = prune(repo, Retention(keep_last=1))
    assert report.forgotten == [snaps[1].id]
    assert report.packs_deleted >= 1
    left = {s.id: s.pinned for s in repo.snapshots()}
    assert left == {snaps[0].id: True, snaps[2].id: False}
    for snap, expected in ((snaps[0], data[0]), (snaps[2], data[2])):
        out = io.BytesIO()
        repo.restore_stream(snap.id, "disk.img", out)
        assert out.getvalue() == expected
    assert check(repo, read_data=True).ok

    repo.release(snaps[0].id)
    assert prune(repo, Retention(keep_last=1)).forgotten == [snaps[0].id]
    assert check(repo, read_data=True).ok


def test_check_finds_a_missing_pack(repo: Repository, tmp_path: Path) -> None:
    snap, _ = repo.store([source("f", vm_like(600_000, 40))])
    assert check(repo).ok
    pack = repo.index[snap.files[0].chunks[0]].pack
    (tmp_path / "repo" / "data" / pack[:2] / pack).unlink()
    report = check(repo)
    assert not report.ok
    assert any("missing" in e for e in report.errors)


def test_prune_reclaims_duplicates_written_by_concurrent_writers(
    repo: Repository, tmp_path: Path
) -> None:
    data = vm_like(800_000, 41)
    other = Repository.open(LocalBackend(tmp_path / "repo"), passphrase=PASS)
    # Two writers that loaded the index before either stored: both store every chunk.
    barrier = threading.Barrier(2)
    results = []

    def write(r: Repository, name: str) -> None:
        barrier.wait()
        results.append(r._store([source(name, data)], name, (), None, None, _NoLock(), {}, name))

    threads = [threading.Thread(target=write, args=(r, n)) for r, n in ((repo, "a"), (other, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    before = sum(size for _, size in repo.backend.list("data/"))
    report = prune(repo, None)
    after = sum(size for _, size in repo.backend.list("data/"))
    assert report.forgotten == []
    assert after < before * 0.6, (before, after)
    assert check(repo, read_data=True).ok
    for snap in repo.snapshots():
        out = io.BytesIO()
        repo.restore_stream(snap.id, snap.files[0].path, out)
        assert out.getvalue() == data


class _NoLock:
    def check(self) -> None:
        pass


def test_locks_shared_together_exclusive_alone(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "r")
    a = Lock(backend, SHARED).acquire()
    b = Lock(backend, SHARED).acquire()
    with pytest.raises(Locked):
        Lock(backend, EXCLUSIVE).acquire(timeout=0.2)
    a.release()
    b.release()
    ex = Lock(backend, EXCLUSIVE).acquire()
    with pytest.raises(Locked):
        Lock(backend, SHARED).acquire(timeout=0.2)
    ex.release()
    # A holder that died leaves a lease that lapses.
    dead = Lock(backend, EXCLUSIVE, lease_s=0.3).acquire()
    dead._stop.set()
    time.sleep(0.4)
    assert [lock.key for lock in list_locks(backend)] == [dead.key]
    Lock(backend, SHARED).acquire().release()
    assert list_locks(backend) == [], "the next taker removed the dead holder's lease"
    stale = Lock(backend, EXCLUSIVE, lease_s=0.2).acquire()
    stale._stop.set()
    time.sleep(0.3)
    assert clear_stale(backend) == 1


def test_two_writers_and_a_waiting_prune(repo: Repository, tmp_path: Path) -> None:
    """Real processes: two stores hold shared locks; prune waits for both, then runs."""
    files = []
    for i in range(2):
        path = tmp_path / f"big-{i}.img"
        path.write_bytes(vm_like(24_000_000, 50 + i))
        files.append(path)
    secret = tmp_path / "pass"
    secret.write_text(PASS)
    base = [str(BIN / "dockyard-agent"), "vault", "--repo", str(tmp_path / "repo")]
    base += ["--passphrase-file", str(secret), "--json"]
    writers = [
        subprocess.Popen([*base, "store", str(f), "--name", f.name], stdout=subprocess.PIPE)
        for f in files
    ]
    deadline = time.monotonic() + 30
    while len(list(repo.backend.list("locks/"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    pruner = subprocess.run(
        [*base, "prune", "--keep-last", "1", "--wait", "60"], capture_output=True, timeout=120
    )
    assert pruner.returncode == 0, pruner.stderr
    outs = [w.communicate(timeout=120)[0] for w in writers]
    assert [w.returncode for w in writers] == [0, 0]
    report = json.loads(pruner.stdout)
    assert report["lock_wait_s"] > 0, "prune waited for the writers"
    ids = {json.loads(o)["snapshot"] for o in outs}
    assert {s.id for s in repo.snapshots()} == ids, "keep-last 1 per name keeps both"
    for snap, path in zip(sorted(repo.snapshots(), key=lambda s: s.name), files, strict=True):
        out = io.BytesIO()
        repo.restore_stream(snap.id, path.name, out)
        assert out.getvalue() == path.read_bytes()
