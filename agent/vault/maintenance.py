"""Prune (forget snapshots by a retention rule and reclaim what nothing uses) and check
(can every snapshot be restored, and what exactly is damaged if not?).

Prune is safe by construction. It first makes a plan from a survey (`survey.take`), and
a dry run prints that very plan; then, under the exclusive lock, it carries it out in an
order that leaves every kept snapshot restorable whenever it is killed:

1. forget snapshots the rule does not keep (pinned ones never);
2. delete packs no index names that hold nothing a kept snapshot needs and were written
   longer than the grace period ago (a store elsewhere whose lease lapsed may still be
   uploading younger ones); a pack that holds needed chunks is re-indexed instead;
3. copy the still-used blobs of mostly-unused packs into new packs;
4. write one new index naming every used blob once (its packs' headers where an index
   was lost or damaged);
5. delete the old index files: from here on only the new index is read;
6. delete the indexed packs the new index does not name.

It never deletes a pack holding a chunk a kept snapshot names unless that chunk is in
another pack the new index names. While a kept snapshot names a chunk that neither an
index nor a pack header holds, or a snapshot file is damaged (so what it needs is
unknown), prune refuses before changing anything, names the damage and the repair.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..crashpoints import vault_point
from .errors import Corrupted, RepositoryDamaged
from .locks import EXCLUSIVE, Lock
from .packs import BlobRef, PackWriter, pack_key
from .repository import Repository, Snapshot
from .retention import Retention
from .survey import Survey, take, users

# A pack less used than this is rewritten; a fuller one is kept with its dead bytes.
REPACK_BELOW = 0.8
GRACE_S = 24 * 3600.0
"""A pack no index names is left alone this long after it was written."""

REPAIR_ADVICE = (
    "`dockyard-agent vault repair snapshots` writes copies of the damaged snapshots without "
    "what was lost (the originals are kept aside); `vault restore --salvage` restores the rest "
    "of a damaged file"
)


@dataclass
class PrunePlan:
    forget: list[Snapshot]
    kept: list[Snapshot]
    delete_unindexed: list[str]
    """Packs no index names, needed by nothing, older than the grace period."""
    young: list[str]
    """Packs no index names and needed by nothing, but within the grace period."""
    unreadable: list[str]
    """Packs no index names whose header will not open: kept, for check to name."""
    reindex: list[str]
    """Packs no index names that hold chunks kept snapshots need: they join the index."""
    repack: list[str]
    delete_indexed: list[str]
    """Indexed packs with nothing live."""
    new_index: dict[str, list[list[Any]]]
    to_copy: list[tuple[bytes, BlobRef]]
    old_indexes: list[str]
    sizes: dict[str, int]

    @property
    def packs_to_delete(self) -> list[str]:
        return sorted({*self.delete_unindexed, *self.repack, *self.delete_indexed})


@dataclass
class PruneReport:
    forgotten: list[str] = field(default_factory=list)
    kept: int = 0
    packs_deleted: int = 0
    deleted_packs: list[str] = field(default_factory=list)
    """Every pack deleted (or, in a dry run, that would be)."""
    packs_written: int = 0
    packs_reindexed: int = 0
    young_packs_kept: int = 0
    unreadable_packs_kept: int = 0
    bytes_freed: int = 0
    dry_run: bool = False
    lock_wait_s: float = 0.0


def plan_prune(
    survey: Survey, rule: Retention | None, *, grace_s: float, ages: Callable[[str], float]
) -> PrunePlan:
    """What a prune deletes, copies and indexes; raises RepositoryDamaged rather than
    plan anything while a kept snapshot's data is nowhere or a snapshot is unreadable."""
    snapshots = survey.snapshots
    keep = rule.keep(snapshots) if rule else {s.id for s in snapshots}
    keep |= {s.id for s in snapshots if s.pinned}
    kept = [s for s in snapshots if s.id in keep]
    forget = [s for s in snapshots if s.id not in keep]
    damage = survey.damage(kept)
    if damage:
        advice = REPAIR_ADVICE
        if survey.damaged_snapshots:
            advice = f"`vault repair snapshots` moves unreadable snapshots aside; {advice}"
        raise RepositoryDamaged(damage, advice)

    used = {c for s in kept for f in s.files for c in f.chunks}
    placed, _ = survey.locate(used)

    new_index: dict[str, list[list[Any]]] = {}
    to_copy: list[tuple[bytes, BlobRef]] = []
    repack: list[str] = []
    delete_indexed: list[str] = []
    named = survey.indexed_packs & set(survey.packs)
    for pack in sorted(named):
        blobs = survey.by_pack.get(pack, [])
        live = [(b, r) for b, r in blobs if b in used and placed.get(b) == r]
        if not live:
            delete_indexed.append(pack)
            continue
        live_bytes = sum(r.length for _, r in live)
        if live_bytes / survey.packs[pack] < REPACK_BELOW:
            to_copy.extend(live)
            repack.append(pack)
        else:
            new_index[pack] = [[b.hex(), r.offset, r.length, r.raw_length] for b, r in live]

    reindex: list[str] = []
    delete_unindexed: list[str] = []
    young: list[str] = []
    for pack, entries in sorted(survey.headers.items()):
        if pack in named:
            continue
        needed = [e for e in entries if e[0] in used and placed[e[0]].pack == pack]
        if needed:
            new_index[pack] = [[b.hex(), off, n, raw] for b, off, n, raw in needed]
            reindex.append(pack)
        elif ages(pack) >= grace_s:
            delete_unindexed.append(pack)
        else:
            young.append(pack)
    unreadable = sorted(p for p in survey.unreadable if p not in named)
    return PrunePlan(
        forget,
        kept,
        delete_unindexed,
        young,
        unreadable,
        reindex,
        repack,
        delete_indexed,
        new_index,
        to_copy,
        sorted(survey.index_files | set(survey.damaged_indexes)),
        dict(survey.packs),
    )


def prune(
    repo: Repository,
    rule: Retention | None,
    *,
    dry_run: bool = False,
    lock_timeout: float = 0.0,
    grace_s: float = GRACE_S,
    clock: Callable[[], float] = time.time,
    progress: Callable[[str], None] | None = None,
) -> PruneReport:
    report = PruneReport(dry_run=dry_run)
    say = progress or (lambda _msg: None)
    started = time.monotonic()
    with Lock(repo.backend, EXCLUSIVE).acquire(lock_timeout) as lock:
        report.lock_wait_s = round(time.monotonic() - started, 3)
        now = clock()
        survey = take(repo)
        plan = plan_prune(
            survey,
            rule,
            grace_s=grace_s,
            ages=lambda pack: now - repo.backend.modified(pack_key(pack)),
        )
        report.forgotten = [s.id for s in plan.forget]
        report.kept = len(plan.kept)
        report.deleted_packs = plan.packs_to_delete
        report.packs_deleted = len(plan.packs_to_delete)
        report.bytes_freed = sum(plan.sizes[p] for p in plan.packs_to_delete)
        report.packs_reindexed = len(plan.reindex)
        report.young_packs_kept = len(plan.young)
        report.unreadable_packs_kept = len(plan.unreadable)
        if dry_run:
            return report
        _carry_out(repo, lock, plan, report)
        say(f"deleted {report.packs_deleted} pack(s), wrote {report.packs_written}")
    return report


def _carry_out(repo: Repository, lock: Lock, plan: PrunePlan, report: PruneReport) -> None:
    for snap in plan.forget:
        lock.check()
        repo.backend.delete(f"snapshots/{snap.id}")
        vault_point("prune_snapshot_delete")
    # First, so that a prune on a full disk has room for the packs and index it writes.
    _delete_packs(repo, lock, plan.delete_unindexed)

    new_index = dict(plan.new_index)
    writer = PackWriter()
    for blob_id, ref in plan.to_copy:
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
    repo._write_index(new_index)
    vault_point("prune_index_put")
    for name in plan.old_indexes:
        lock.check()
        repo.backend.delete(f"index/{name}")
        vault_point("prune_index_delete")
    _delete_packs(repo, lock, sorted({*plan.repack, *plan.delete_indexed}))
    repo.reload_index()


def _delete_packs(repo: Repository, lock: Lock, packs: list[str]) -> None:
    for pack in packs:
        lock.check()
        repo.backend.delete(pack_key(pack))
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
    """Snapshots read (damaged ones not counted here)."""
    damaged_snapshots: int = 0
    indexes: int = 0
    damaged_indexes: int = 0
    packs: int = 0
    """Packs on the store."""
    packs_indexed: int = 0
    unreferenced_packs: int = 0
    """Packs no index names whose chunks no snapshot needs (a killed store's)."""
    packs_read: int = 0
    blobs_read: int = 0
    bytes_read: int = 0
    read_data: bool = False
    errors: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        read = (
            f"; read {self.packs_read} pack(s), {self.blobs_read} blob(s), {self.bytes_read} bytes"
            if self.read_data
            else "; pack headers of unindexed packs read, data not read"
        )
        verdict = "intact" if self.ok else f"{len(self.errors)} problem(s)"
        return (
            f"{self.snapshots} snapshot(s), {self.indexes} index file(s), {self.packs} pack(s) "
            f"({self.unreferenced_packs} unreferenced){read}: {verdict}"
        )


def check(repo: Repository, *, read_data: bool = False) -> CheckReport:
    """Can every snapshot be restored? Each problem names the damaged object and what it
    affects; `advice` says which command repairs what can be repaired. With `read_data`,
    every pack is read whole and every indexed blob opened and checked against its id."""
    survey = take(repo)
    report = CheckReport(read_data=read_data)
    report.snapshots = len(survey.snapshots)
    report.damaged_snapshots = len(survey.damaged_snapshots)
    report.indexes = len(survey.index_files)
    report.damaged_indexes = len(survey.damaged_indexes)
    report.packs = len(survey.packs)
    indexed = survey.indexed_packs
    report.packs_indexed = len(indexed & set(survey.packs))
    errors, advice = report.errors, report.advice
    needed = {c for s in survey.snapshots for f in s.files for c in f.chunks}
    where = users(survey.snapshots, needed)

    def affects(chunks: set[bytes]) -> str:
        places = sorted({p for c in chunks for p in where.get(c, [])})
        if not places:
            return "no snapshot uses them"
        return "affects " + ", ".join(places[:4]) + (" ..." if len(places) > 4 else "")

    for name, problem in sorted(survey.damaged_indexes.items()):
        errors.append(f"index {name[:16]} is damaged ({problem}); the packs it named are intact")
    for sid, problem in sorted(survey.damaged_snapshots.items()):
        errors.append(f"snapshot {sid[:8]} is damaged ({problem}): it cannot be restored")
    for pack, blobs in sorted(survey.by_pack.items()):
        size = survey.packs.get(pack)
        mine = {b for b, _ in blobs}
        if size is None:
            errors.append(f"pack {pack[:16]} is named by the index but missing: {affects(mine)}")
        elif any(r.offset + r.length > size for _, r in blobs):
            errors.append(f"pack {pack[:16]} is shorter than the index says: {affects(mine)}")
    placed, lost = survey.locate(needed)
    unindexed_needed = {
        c for c, r in placed.items() if survey.index.get(c) is None or survey.index[c] != r
    }
    if unindexed_needed:
        packs = sorted({placed[c].pack[:16] for c in unindexed_needed})
        errors.append(
            f"{len(unindexed_needed)} chunk(s) snapshots need are in no index, but pack(s) "
            f"{', '.join(packs[:4])} hold them: {affects(unindexed_needed)}"
        )
        advice.append("`dockyard-agent vault repair index` rebuilds the index from pack headers")
    errors.extend(survey.lost_lines(survey.snapshots))
    for pack, problem in sorted(survey.unreadable.items()):
        errors.append(f"pack {pack[:16]}: {problem} (no index names it)")
    users_of_unindexed = {b for p in survey.headers for b, *_ in survey.headers[p]} & needed
    report.unreferenced_packs = sum(
        1
        for p, entries in survey.headers.items()
        if p not in indexed and not any(e[0] in users_of_unindexed for e in entries)
    )
    if read_data:
        data = repo.verify(survey.packs)
        report.packs_read, report.blobs_read = data["packs"], data["blobs"]
        report.bytes_read = data["bytes"]
        for pack, problem in data["packs_damaged"].items():
            mine = {b for b, _ in survey.by_pack.get(pack, [])}
            errors.append(f"{problem}: {affects(mine)}")
        for blob, problem in data["blobs_damaged"].items():
            errors.append(f"{problem}: {affects({blob})}")
    if lost or survey.damaged_snapshots or (read_data and data["blobs_damaged"]):
        advice.append(REPAIR_ADVICE)
    if survey.damaged_indexes and not unindexed_needed:
        advice.append("`dockyard-agent vault repair index` replaces the damaged index files")
    return report
