"""Damage on purpose: a deleted or truncated index, a damaged snapshot, a lost or damaged
pack. Each makes only what depends on it unavailable; prune never deletes what a kept
snapshot needs; repair makes the repository whole where its objects allow; salvage
restores the rest of a damaged file.
"""

from __future__ import annotations

import hashlib
import io
import time
from pathlib import Path

import pytest

from dockyard.agent.vault.backends import LocalBackend
from dockyard.agent.vault.errors import (
    Corrupted,
    IncompleteRestore,
    RepositoryDamaged,
    Salvaged,
    SnapshotNotFound,
)
from dockyard.agent.vault.holes import merged, place
from dockyard.agent.vault.maintenance import check, prune
from dockyard.agent.vault.repair import repair_index, repair_snapshots
from dockyard.agent.vault.repository import Repository, Snapshot, Source
from dockyard.agent.vault.retention import Retention

from .conftest import PASS, vm_like


def source(name: str, data: bytes) -> Source:
    return Source(name, lambda: io.BytesIO(data), len(data))


def restored(repo: Repository, snap: Snapshot, path: str) -> bytes:
    out = io.BytesIO()
    repo.restore_stream(snap.id, path, out)
    return out.getvalue()


def objects(root: Path) -> dict[str, str]:
    """Every object of the repository with a digest of its bytes (locks aside)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.relative_to(root).as_posix().startswith(("locks/", "tmp/"))
    }


def three_snapshots(repo: Repository) -> tuple[list[Snapshot], list[bytes]]:
    data = [vm_like(900_000, 70 + i) for i in range(3)]
    snaps = [repo.store([source("disk.img", d)], name=f"vm-{i}")[0] for i, d in enumerate(data)]
    return snaps, data


def test_a_deleted_index_never_lets_prune_delete_a_kept_snapshots_packs(
    repo: Repository, tmp_path: Path
) -> None:
    """The review's case: one index file deleted, `prune --keep-last 5` keeps every
    snapshot; it used to delete the packs of the snapshot that index named."""
    root = tmp_path / "repo"
    snaps, data = three_snapshots(repo)
    victim = sorted((root / "index").iterdir())[1]
    victim.unlink()
    fresh = Repository.open(LocalBackend(root), passphrase=PASS)
    report = check(fresh)
    assert not report.ok
    assert any("in no index" in e and "hold them" in e for e in report.errors), report.errors
    assert any("repair index" in a for a in report.advice)

    planned = prune(fresh, Retention(keep_last=5), dry_run=True)
    packs_before = {p.name for p in (root / "data").rglob("*") if p.is_file()}
    done = prune(fresh, Retention(keep_last=5))
    assert done.deleted_packs == planned.deleted_packs, "the dry run printed the real plan"
    assert done.packs_reindexed >= 1, "the unindexed snapshot's packs were indexed again"
    packs_after = {p.name for p in (root / "data").rglob("*") if p.is_file()}
    assert packs_after >= packs_before - set(done.deleted_packs)
    assert check(fresh, read_data=True).ok, "prune left the repository whole"
    again = Repository.open(LocalBackend(root), passphrase=PASS)
    for snap, expected in zip(snaps, data, strict=True):
        assert restored(again, snap, "disk.img") == expected


def test_a_truncated_index_or_damaged_snapshot_spoils_only_itself(
    repo: Repository, tmp_path: Path
) -> None:
    root = tmp_path / "repo"
    snaps, data = three_snapshots(repo)
    index = sorted((root / "index").iterdir())[0]
    index.write_bytes(index.read_bytes()[:40])
    snap_file = root / "snapshots" / snaps[2].id
    snap_file.write_bytes(snap_file.read_bytes()[:-7] + b"garbage")

    fresh = Repository.open(LocalBackend(root), passphrase=PASS)
    listed = fresh.snapshots()
    assert {s.id for s in listed} == {snaps[0].id, snaps[1].id}
    assert set(fresh.damaged_snapshots) == {snaps[2].id}
    assert set(fresh.damaged_indexes) == {index.name}
    with pytest.raises(Exception, match="damaged"):
        fresh.snapshot(snaps[2].id)

    report = check(fresh, read_data=True)
    assert report.snapshots == 2
    assert report.damaged_snapshots == 1
    assert report.damaged_indexes == 1
    assert report.packs_read == report.packs > 0
    assert report.bytes_read > 0
    assert any(index.name[:16] in e for e in report.errors)
    assert any(snaps[2].id[:8] in e and "cannot be restored" in e for e in report.errors)
    with pytest.raises(RepositoryDamaged, match="repair snapshots"):
        prune(fresh, Retention(keep_last=5))

    fixed = repair_index(fresh)
    assert fixed.damaged_indexes == [index.name]
    assert fixed.blobs_indexed > 0
    moved = repair_snapshots(fresh)
    assert moved.moved_aside == [snaps[2].id]
    assert (root / "damaged" / "snapshots" / snaps[2].id).exists(), "kept aside, not deleted"
    whole = check(fresh, read_data=True)
    assert whole.ok, whole.errors
    for snap, expected in zip(snaps[:2], data[:2], strict=True):
        assert restored(fresh, snap, "disk.img") == expected


def test_prune_refuses_on_lost_data_and_repair_snapshots_keeps_the_rest(
    repo: Repository, tmp_path: Path
) -> None:
    root = tmp_path / "repo"
    snaps, data = three_snapshots(repo)
    target = snaps[1]
    chunk = target.files[0].chunks[3]
    pack = repo.index[chunk].pack
    (root / "data" / pack[:2] / pack).unlink()
    lost_refs = [(c, r) for c, r in repo.index.items() if r.pack == pack]

    before = objects(root)
    with pytest.raises(RepositoryDamaged) as refused:
        prune(repo, Retention(keep_last=1))
    assert target.id[:8] in str(refused.value)
    assert "repair snapshots" in str(refused.value)
    assert objects(root) == before, "a refused prune changes nothing"
    with pytest.raises(RepositoryDamaged):
        prune(repo, Retention(keep_last=1), dry_run=True)

    fixed = repair_snapshots(repo)
    assert list(fixed.rewritten) == [target.id]
    copy_id = fixed.rewritten[target.id]
    holes = fixed.lost[target.id]["disk.img"]
    assert holes, "the lost ranges are named"
    copy = repo.snapshot(copy_id)
    assert copy.meta["repaired_from"] == target.id
    assert "repaired" in copy.tags
    with pytest.raises(SnapshotNotFound):
        repo.snapshot(target.id)
    got = restored(repo, copy, "disk.img")
    assert len(got) == len(data[1])
    expected = bytearray(data[1])
    for offset, length in holes:
        expected[offset : offset + length] = bytes(length)
    assert got == bytes(expected), "every byte outside the lost ranges is intact"
    lost_bytes = sum(n for _, n in holes)
    assert lost_bytes <= sum(r.raw_length for c, r in lost_refs if c in target.files[0].chunks)

    again = repair_snapshots(repo)
    assert again.rewritten == {}, "a second run has nothing to do"
    report = prune(repo, Retention(keep_last=1))
    assert report.kept == 3
    assert check(repo, read_data=True).ok


def test_salvage_restores_a_vm_image_with_one_damaged_pack(
    repo: Repository, tmp_path: Path
) -> None:
    root = tmp_path / "repo"
    image = vm_like(3_000_000, 80)
    snap, _ = repo.store([source("vm.img", image)], name="vm")
    assert len({repo.index[c].pack for c in snap.files[0].chunks}) >= 2
    chunk = snap.files[0].chunks[len(snap.files[0].chunks) // 2]
    ref = repo.index[chunk]
    pack = root / "data" / ref.pack[:2] / ref.pack
    raw = bytearray(pack.read_bytes())
    raw[ref.offset + 20] ^= 0xFF
    pack.write_bytes(bytes(raw))

    with pytest.raises(IncompleteRestore):
        repo.restore(snap.id, tmp_path / "plain")
    assert not (tmp_path / "plain" / "vm.img").exists(), "nothing half written"
    with pytest.raises(Salvaged) as salvaged:
        repo.restore(snap.id, tmp_path / "out", salvage=True)
    holes = salvaged.value.holes["vm.img"]
    offset = sum(
        repo.index[c].raw_length for c in snap.files[0].chunks[: len(snap.files[0].chunks) // 2]
    )
    assert holes == [(offset, ref.raw_length)], "exactly the damaged chunk is zeros"
    got = (tmp_path / "out" / "vm.img").read_bytes()
    assert len(got) == len(image)
    assert got[:offset] == image[:offset]
    assert got[offset + ref.raw_length :] == image[offset + ref.raw_length :]
    assert got[offset : offset + ref.raw_length] == bytes(ref.raw_length)


def test_salvage_places_chunks_whose_index_entries_went_with_their_pack(
    repo: Repository, tmp_path: Path
) -> None:
    """A pack and every index file gone: the snapshot's own chunk lengths place every
    intact chunk, so exactly the lost pack's chunks become zeros."""
    root = tmp_path / "repo"
    image = vm_like(2_000_000, 81)
    snap, _ = repo.store([source("vm.img", image)], name="vm")
    chunks = snap.files[0].chunks
    middle = repo.index[chunks[len(chunks) // 2]].pack
    expected_holes, at = [], 0
    for chunk in chunks:
        length = repo.index[chunk].raw_length
        if repo.index[chunk].pack == middle:
            expected_holes.append((at, length))
        at += length
    (root / "data" / middle[:2] / middle).unlink()
    for index in (root / "index").iterdir():
        index.unlink()
    fresh = Repository.open(LocalBackend(root), passphrase=PASS)
    repair_index(fresh)
    with pytest.raises(Salvaged) as salvaged:
        fresh.restore(snap.id, tmp_path / "out", salvage=True)
    holes = salvaged.value.holes["vm.img"]
    assert holes == merged(expected_holes)
    got = bytearray((tmp_path / "out" / "vm.img").read_bytes())
    want = bytearray(image)
    for offset, length in holes:
        assert got[offset : offset + length] == bytes(length)
        want[offset : offset + length] = bytes(length)
    assert got == want


def test_placing_chunks_of_unknown_length() -> None:
    """Snapshots written before chunk lengths were kept: one unknown chunk is placed by
    counting back from the end; several make one hole from the first to the last."""
    a, b, c, d, e = (bytes([i]) * 32 for i in range(5))
    known = {a: 10, c: 5, e: 7}
    one = place([a, b, c], 30, known.get, "f")
    assert [(p.offset, p.length, p.chunk) for p in one] == [(0, 10, a), (10, 15, None), (25, 5, c)]
    two = place([a, b, c, d, e], 40, known.get, "f")
    assert [(p.offset, p.length, p.chunk) for p in two] == [
        (0, 10, a),
        (10, 23, None),
        (33, 7, e),
    ]
    with pytest.raises(Corrupted):
        place([a, c], 40, known.get, "f")
    recorded = place([a, b], 25, known.get, "f", [10, 15])
    assert [(p.offset, p.chunk) for p in recorded] == [(0, a), (10, b)]


def test_a_young_pack_no_index_names_waits_for_the_grace_period(
    repo: Repository, tmp_path: Path
) -> None:
    root = tmp_path / "repo"
    snap, _ = repo.store([source("a", vm_like(600_000, 82))])
    # A store elsewhere has uploaded a pack but not yet its index.
    stray = Repository.open(LocalBackend(root), passphrase=PASS)
    stray.store([source("b", vm_like(600_000, 83))])
    for name in set(p.name for p in (root / "index").iterdir()) - repo.index_files:
        (root / "index" / name).unlink()
    for snap_file in (root / "snapshots").iterdir():
        if snap_file.name != snap.id:
            snap_file.unlink()
    now = time.time()
    young = prune(repo, None)
    assert young.young_packs_kept >= 1
    assert young.packs_deleted == 0
    later = prune(repo, None, clock=lambda: now + 25 * 3600)
    assert later.packs_deleted >= 1, "past the grace period the debris goes"
    assert later.young_packs_kept == 0
    assert check(repo, read_data=True).ok
    assert restored(repo, snap, "a") == vm_like(600_000, 82)
