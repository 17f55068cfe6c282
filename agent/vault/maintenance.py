"""Prune (forget snapshots by a retention rule and reclaim what nothing uses) and check
(is every snapshot's every chunk in a pack that exists?).

Prune runs under the exclusive lock and orders its steps so that a kill at any moment
leaves every remaining snapshot restorable:

1. forget snapshots the rule does not keep (pinned ones never);
2. delete packs no index names (a store that failed or was killed before its index): no
   snapshot can refer to them, and a full disk gets room for what follows;
3. copy the still-used blobs of mostly-unused packs into new packs;
4. write one new index naming every used blob once (this also drops duplicates that
   concurrent writers stored twice);
5. delete the old index files: from here on only the new index is read;
6. delete packs the new index does not name.

Until step 5 the old indexes still point at packs that all exist; after it, the new index
names only packs that are never deleted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import Any

from ..crashpoints import vault_point
from .errors import Corrupted, MissingObject
from .locks import EXCLUSIVE, Lock
from .packs import BlobRef, PackWriter, pack_key, read_header
from .repository import Repository
from .retention import Retention

# A pack less used than this is rewritten; a fuller one is kept with its dead bytes.
REPACK_BELOW = 0.8


@dataclass
class PruneReport:
    forgotten: list[str] = field(default_factory=list)
    kept: int = 0
    packs_deleted: int = 0
    packs_written: int = 0
    bytes_freed: int = 0
    dry_run: bool = False
    lock_wait_s: float = 0.0


def prune(
    repo: Repository,
    rule: Retention | None,
    *,
    dry_run: bool = False,
    lock_timeout: float = 0.0,
    progress: Callable[[str], None] | None = None,
) -> PruneReport:
    report = PruneReport(dry_run=dry_run)
    say = progress or (lambda _msg: None)
    started = time.monotonic()
    with Lock(repo.backend, EXCLUSIVE).acquire(lock_timeout) as lock:
        report.lock_wait_s = round(time.monotonic() - started, 3)
        repo.load_index()
        snapshots = repo.snapshots()
        keep = rule.keep(snapshots) if rule else {s.id for s in snapshots}
        keep |= {s.id for s in snapshots if s.pinned}
        forget = [s for s in snapshots if s.id not in keep]
        report.forgotten = [s.id for s in forget]
        kept = [s for s in snapshots if s.id in keep]
        report.kept = len(kept)
        if dry_run:
            return report

        for snap in forget:
            lock.check()
            repo.backend.delete(f"snapshots/{snap.id}")
            vault_point("prune_snapshot_delete")
        say(f"forgot {len(forget)} snapshot(s)")

        used: set[bytes] = set()
        for snap in kept:
            for entry in snap.files:
                used.update(entry.chunks)
        packs_on_store = {key.rsplit("/", 1)[1]: size for key, size in repo.backend.list("data/")}

        by_pack = repo.blobs_by_pack()
        # Packs no index names were left by a store that failed or was killed (the exclusive
        # lock means none is running): deleted first, so a prune on a full disk has room
        # for the index it writes.
        _delete_packs(repo, lock, packs_on_store, keep=by_pack, report=report)
        packs_on_store = {k: v for k, v in packs_on_store.items() if k in by_pack}
        new_index: dict[str, list[list[Any]]] = {}
        to_copy: list[tuple[bytes, BlobRef]] = []
        for pack, blobs in by_pack.items():
            live = [(b, r) for b, r in blobs if b in used]
            if not live:
                continue
            live_bytes = sum(r.length for _, r in live)
            total = packs_on_store.get(pack, 0)
            if total and live_bytes / total < REPACK_BELOW:
                to_copy.extend(live)
            else:
                new_index[pack] = [[b.hex(), r.offset, r.length, r.raw_length] for b, r in live]

        writer = PackWriter()
        for blob_id, ref in to_copy:
            lock.check()
            sealed = repo.backend.get_range(pack_key(ref.pack), ref.offset, ref.length)
            if len(sealed) != ref.length:
                raise Corrupted(f"pack {ref.pack[:16]}", "shorter than its index says")
            writer.add(blob_id, sealed, ref.raw_length)
            if writer.size >= repo.pack_bytes:
                _put_pack(repo, writer, new_index, report)
                writer = PackWriter()
        if len(writer):
            _put_pack(repo, writer, new_index, report)

        lock.check()
        old_indexes = set(repo.index_files)
        repo._write_index(new_index)
        vault_point("prune_index_put")
        for name in sorted(old_indexes):
            lock.check()
            repo.backend.delete(f"index/{name}")
            vault_point("prune_index_delete")

        _delete_packs(repo, lock, packs_on_store, keep=new_index, report=report)
        repo.load_index()
        say(f"deleted {report.packs_deleted} pack(s), wrote {report.packs_written}")
    return report


def _delete_packs(
    repo: Repository,
    lock: Lock,
    packs: dict[str, int],
    keep: Container[str],
    report: PruneReport,
) -> None:
    """Delete every pack of `packs` (name to size) not in `keep`, counting what was freed."""
    for pack, size in sorted(packs.items()):
        if pack in keep:
            continue
        lock.check()
        repo.backend.delete(pack_key(pack))
        report.packs_deleted += 1
        report.bytes_freed += size
        vault_point("prune_pack_delete")


def _put_pack(
    repo: Repository, writer: PackWriter, index: dict[str, list[list[Any]]], report: PruneReport
) -> None:
    pack_id, data, entries = writer.finish(repo.keys)
    repo.backend.put(pack_key(pack_id), data)
    vault_point("prune_pack_put")
    index[pack_id] = entries
    report.packs_written += 1


@dataclass
class CheckReport:
    snapshots: int = 0
    packs: int = 0
    errors: list[str] = field(default_factory=list)
    unreferenced_packs: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def check(repo: Repository, *, read_packs: bool = False) -> CheckReport:
    """Every snapshot's chunks are indexed, every indexed pack exists at the right size.
    With `read_packs`, every pack's header is also read and matched against the index."""
    report = CheckReport()
    repo.load_index()
    packs_on_store = {key.rsplit("/", 1)[1]: size for key, size in repo.backend.list("data/")}
    indexed = repo.blobs_by_pack()
    report.packs = len(indexed)
    for pack, blobs in sorted(indexed.items()):
        size = packs_on_store.get(pack)
        if size is None:
            report.errors.append(f"pack {pack[:16]} is named by the index but missing")
            continue
        if any(r.offset + r.length > size for _, r in blobs):
            report.errors.append(f"pack {pack[:16]} is shorter than the index says")
            continue
        if read_packs:
            try:
                header = read_header(repo.keys, pack, repo.backend.get(pack_key(pack)))
            except (Corrupted, MissingObject) as e:
                report.errors.append(str(e))
                continue
            listed = {blob for blob, *_ in header}
            if any(b not in listed for b, _ in blobs):
                report.errors.append(f"pack {pack[:16]} lacks blobs its index names")
    report.unreferenced_packs = len(set(packs_on_store) - set(indexed))
    for snap in repo.snapshots():
        report.snapshots += 1
        missing = {c for f in snap.files for c in f.chunks if c not in repo.index}
        if missing:
            report.errors.append(
                f"snapshot {snap.id[:8]} refers to {len(missing)} chunk(s) in no index"
            )
    return report
