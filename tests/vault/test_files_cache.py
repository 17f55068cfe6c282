"""The files cache: a store finds the previous file list on local disk, per host and
source, and rebuilds it from the repository once when it is missing or not to be trusted."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest

from dockyard.agent.vault.backends import LocalBackend
from dockyard.agent.vault.maintenance import prune
from dockyard.agent.vault.repository import Repository, Snapshot, Source

from .conftest import FAST, PASS, SMALL, vm_like


def _files(folder: Path) -> list[Source]:
    return [Source.from_path(p, f"{folder.name}/{p.name}") for p in sorted(folder.iterdir())]


def _tree(tmp_path: Path, name: str, seed: int) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for i in range(3):
        (folder / f"disk{i}.img").write_bytes(vm_like(300_000, seed + i))
    return folder


@pytest.fixture
def cached(tmp_path: Path) -> Repository:
    return Repository.init(
        LocalBackend(tmp_path / "repo"),
        PASS,
        params=SMALL,
        pack_bytes=1024 * 1024,
        cost=FAST,
        cache=tmp_path / "cache",
    )


def _reopen(repo: Repository, cache: Path | None) -> Repository:
    return Repository.open(repo.backend, passphrase=PASS, cache=cache)


def _no_snapshot_reads(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(full: str, asked: str) -> Snapshot:
        raise AssertionError(f"the store opened snapshot {full}")

    monkeypatch.setattr(repo, "_load_snapshot", refuse)


def test_a_cached_source_is_stored_again_without_opening_any_snapshot(
    cached: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = _tree(tmp_path, "a", 1)
    cached.store(_files(a), name="a")
    again = _reopen(cached, tmp_path / "cache")
    _no_snapshot_reads(again, monkeypatch)
    snap, stats = again.store(_files(a), name="a")
    assert (stats.files, stats.files_unchanged, stats.bytes_read) == (3, 3, 0)
    assert snap.source == "a"


def test_sources_keep_their_own_entries(cached: Repository, tmp_path: Path) -> None:
    """Storing b between two stores of a does not make a's files look new, as it did when
    the cache was this host's newest snapshot, whatever it held."""
    a, b = _tree(tmp_path, "a", 1), _tree(tmp_path, "b", 10)
    cached.store(_files(a), name="a")
    cached.store(_files(b), name="b")
    _, stats = cached.store(_files(a), name="a")
    assert (stats.files_unchanged, stats.bytes_read) == (3, 0)


@pytest.mark.parametrize("damage", ["deleted", "garbage", "other repository"])
def test_a_missing_or_untrusted_entry_is_rebuilt_from_the_newest_snapshot(
    cached: Repository, tmp_path: Path, damage: str
) -> None:
    a = _tree(tmp_path, "a", 1)
    cached.store(_files(a), name="a")
    (entry,) = (tmp_path / "cache" / cached.id / "files").iterdir()
    if damage == "deleted":
        entry.unlink()
    elif damage == "garbage":
        entry.write_bytes(b"\x00" * 64)
    else:
        # A genuine entry of another repository with the same host and source: sealed
        # with the other key, so it does not open here.
        other = Repository.init(
            LocalBackend(tmp_path / "other"), PASS, params=SMALL, cost=FAST, cache=tmp_path / "c2"
        )
        other.store(_files(_tree(tmp_path, "x", 50)), name="a")
        (theirs,) = (tmp_path / "c2" / other.id / "files").iterdir()
        entry.write_bytes(theirs.read_bytes())
    (a / "disk1.img").write_bytes(vm_like(300_000, 99))  # one file changed meanwhile
    snap, stats = _reopen(cached, tmp_path / "cache").store(_files(a), name="a")
    assert (stats.files_unchanged, stats.bytes_read) == (2, 300_000)
    out = io.BytesIO()
    cached.restore_stream(snap.id, "a/disk1.img", out)
    assert out.getvalue() == (a / "disk1.img").read_bytes()
    assert entry.exists()  # written again by the store


def test_the_rebuild_takes_this_hosts_newest_snapshot_of_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = Repository.init(LocalBackend(tmp_path / "repo"), PASS, params=SMALL, cost=FAST)
    a = _tree(tmp_path, "a", 1)
    monkeypatch.setattr(socket, "gethostname", lambda: "elsewhere")
    repo.store(_files(a), name="a")  # another host's: not this host's files
    monkeypatch.setattr(socket, "gethostname", lambda: "here")
    _, stats = repo.store(_files(a), name="a")
    assert stats.files_unchanged == 0
    repo.store(_files(_tree(tmp_path, "b", 10)), name="b")
    _, stats = repo.store(_files(a), name="a")  # no cache folder: rebuilt each time
    assert stats.files_unchanged == 3


def test_a_cached_file_whose_chunks_were_pruned_is_read_again(
    cached: Repository, tmp_path: Path
) -> None:
    a = _tree(tmp_path, "a", 1)
    first, _ = cached.store(_files(a), name="a")
    cached.backend.delete(f"snapshots/{first.id}")  # forgotten elsewhere, say
    report = prune(cached, None, grace_s=0)  # its packs go, the cache entry stays
    assert report.packs_deleted
    assert not cached.snapshots()
    snap, stats = _reopen(cached, tmp_path / "cache").store(_files(a), name="a")
    assert (stats.files_unchanged, stats.bytes_read) == (0, 900_000)
    out = io.BytesIO()
    cached.restore_stream(snap.id, "a/disk2.img", out)
    assert out.getvalue() == (a / "disk2.img").read_bytes()
