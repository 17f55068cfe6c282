"""Opening a repository: the key derived while the sealed index files are read."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest

from dockyard.agent.vault import crypto
from dockyard.agent.vault.backends import LocalBackend
from dockyard.agent.vault.errors import WrongKey
from dockyard.agent.vault.repository import Repository, Source

from .conftest import FAST, PASS, vm_like


def test_scrypt_lets_another_thread_run_meanwhile() -> None:
    ticks = 0
    done = threading.Event()

    def count() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1

    counter = threading.Thread(target=count)
    counter.start()
    try:
        started = time.perf_counter()
        before = ticks
        crypto._scrypt(PASS, b"s" * 16, crypto.ScryptCost(n=2**16, r=8, p=1))
        during = ticks - before
        elapsed = time.perf_counter() - started
    finally:
        done.set()
        counter.join()
    # Holding the GIL, scrypt would leave the counter a switch interval's worth at most.
    assert elapsed > 0.02
    assert during > 10_000, f"the other thread ran only {during} times in {elapsed:.3f} s"


def test_open_reads_indexes_beside_the_key_and_restores_byte_exact(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "repo")
    repo = Repository.init(backend, PASS, pack_bytes=1024 * 1024, cost=FAST)
    data = vm_like(3_000_000, 5)
    for i in range(3):  # three index files
        snap, _ = repo.store(
            [Source(f"d{i}.img", lambda: io.BytesIO(data[i:]), len(data) - i, 0o600, 1.0)],
            name=f"s{i}",
        )
    assert len(repo.index_files) == 3
    again = Repository.open(LocalBackend(tmp_path / "repo"), passphrase=PASS)
    assert again.index == repo.index
    assert again.index_files == repo.index_files
    assert again._fetched == {}, "read-ahead bytes are dropped once the index is loaded"
    again.restore(snap.id, tmp_path / "out")
    assert (tmp_path / "out" / "d2.img").read_bytes() == data[2:]
    with pytest.raises(WrongKey):
        Repository.open(LocalBackend(tmp_path / "repo"), passphrase="not the passphrase")


def test_a_damaged_index_read_ahead_is_still_reported(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "repo")
    repo = Repository.init(backend, PASS, pack_bytes=1024 * 1024, cost=FAST)
    repo.store([Source("a.img", lambda: io.BytesIO(vm_like(500_000, 1)), 500_000, 0o600, 1.0)])
    (name,) = repo.index_files
    path = tmp_path / "repo" / "index" / name
    path.write_bytes(path.read_bytes()[:-5])
    again = Repository.open(LocalBackend(tmp_path / "repo"), passphrase=PASS)
    assert set(again.damaged_indexes) == {name}
    assert "authentication failed" in again.damaged_indexes[name]
