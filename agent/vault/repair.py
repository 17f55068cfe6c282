"""Repair: make a damaged repository whole again where its own objects allow it.

- `repair_index` rebuilds the index from the packs' sealed headers (the index is only a
  cache of them): after a lost, truncated or damaged index file every intact pack's
  blobs are indexed again.
- `repair_snapshots` rewrites each snapshot whose files name chunks that are lost (or,
  with `read_data`, damaged): the new snapshot keeps every intact byte, puts zeros where
  data was lost and names those ranges in its `meta["lost"]`; only once it is written is
  the original moved aside (to `damaged/snapshots/`, never deleted). Unreadable snapshot
  files are moved aside too, so prune can go on.
- `repair_config` puts the config back from its copy (`keys/config`).

Each runs under the exclusive lock; its crash points are named for the kill -9 tests. A
repair run twice does no more than once: a snapshot already rewritten is not rewritten
again, and its original is only moved aside.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field, replace
from typing import Any

from ..crashpoints import vault_point
from . import crypto
from .backends import Backend
from .errors import Corrupted, MissingObject, NotARepository, VaultError, WrongKey
from .holes import merged, place
from .locks import EXCLUSIVE, Lock
from .packs import BlobRef
from .repository import (
    CONFIG_COPY,
    FileEntry,
    Repository,
    Snapshot,
    StoreStats,
    _config_body,
    _Writer,
)
from .survey import Survey, take

ASIDE = "damaged/snapshots/"


@dataclass
class IndexRepair:
    packs_read: int = 0
    blobs_indexed: int = 0
    unreadable_packs: dict[str, str] = field(default_factory=dict)
    replaced_indexes: int = 0
    damaged_indexes: list[str] = field(default_factory=list)


@dataclass
class SnapshotRepair:
    rewritten: dict[str, str] = field(default_factory=dict)
    """Original snapshot id -> the id of the copy written without what was lost."""
    lost: dict[str, dict[str, list[tuple[int, int]]]] = field(default_factory=dict)
    """Original snapshot id -> file -> (offset, length) ranges now zeros."""
    moved_aside: list[str] = field(default_factory=list)
    index: IndexRepair | None = None


def repair_index(repo: Repository, *, lock_timeout: float = 0.0) -> IndexRepair:
    with Lock(repo.backend, EXCLUSIVE).acquire(lock_timeout) as lock:
        return _rebuild_index(repo, lock, take(repo, every_header=True))


def _rebuild_index(repo: Repository, lock: Lock, survey: Survey) -> IndexRepair:
    """One new index from every readable pack header (and, for a pack whose header will
    not open, what a readable index said of it), then the old index files deleted."""
    report = IndexRepair(
        packs_read=len(survey.headers),
        unreadable_packs=dict(survey.unreadable),
        damaged_indexes=sorted(survey.damaged_indexes),
    )
    packs: dict[str, list[list[Any]]] = {}
    for pack, entries in sorted(survey.headers.items()):
        packs[pack] = [[b.hex(), off, n, raw] for b, off, n, raw in entries]
    for blob, ref in survey.index.items():
        if ref.pack in survey.unreadable:
            packs.setdefault(ref.pack, []).append(
                [blob.hex(), ref.offset, ref.length, ref.raw_length]
            )
    report.blobs_indexed = sum(len(v) for v in packs.values())
    old = sorted(survey.index_files | set(survey.damaged_indexes))
    lock.check()
    repo._write_index(packs)
    vault_point("repair_index_put")
    for name in old:
        lock.check()
        repo.backend.delete(f"index/{name}")
        vault_point("repair_index_delete")
    report.replaced_indexes = len(old)
    repo.reload_index()
    return report


def repair_snapshots(
    repo: Repository, *, read_data: bool = False, lock_timeout: float = 0.0
) -> SnapshotRepair:
    report = SnapshotRepair()
    with Lock(repo.backend, EXCLUSIVE).acquire(lock_timeout) as lock:
        survey = take(repo)
        known = dict(survey.index)  # lengths, even of chunks whose pack is gone
        needed = {c for s in survey.snapshots for f in s.files for c in f.chunks}
        placed, lost = survey.locate(needed)
        if (
            any(survey.index.get(c) != r for c, r in placed.items())
            or survey.damaged_indexes
            or survey.indexed_packs - set(survey.packs)
        ):
            # Chunks only pack headers hold are not lost: index them first; and an index
            # that names packs which are gone would still say they exist.
            report.index = _rebuild_index(repo, lock, take(repo, every_header=True))
            survey = take(repo)
            placed, lost = survey.locate(needed)
        damaged: set[bytes] = set()
        if read_data:
            damaged = set(repo.verify(survey.packs)["blobs_damaged"]) & needed
        known.update(placed)
        done = {
            str(s.meta["repaired_from"]): s.id
            for s in survey.snapshots
            if s.meta.get("repaired_from")
        }
        for sid in sorted(survey.damaged_snapshots):
            _move_aside(repo, lock, sid)
            report.moved_aside.append(sid)
        for snap in survey.snapshots:
            gone = {c for f in snap.files for c in f.chunks if c in lost or c in damaged}
            if not gone:
                continue
            if snap.id in done:  # rewritten by an earlier run killed before the move
                report.rewritten[snap.id] = done[snap.id]
            else:
                copy, holes = _without(repo, snap, gone, known)
                repo._write_snapshot(copy)
                vault_point("repair_snapshot_put")
                report.rewritten[snap.id] = copy.id
                report.lost[snap.id] = holes
                if snap.pinned:
                    repo.pin(copy.id, f"repaired copy of pinned snapshot {snap.id[:8]}")
            _move_aside(repo, lock, snap.id)
            report.moved_aside.append(snap.id)
            if snap.pinned:
                repo.backend.delete(f"pins/{snap.id}")
    return report


def _without(
    repo: Repository, snap: Snapshot, gone: set[bytes], known: dict[bytes, BlobRef]
) -> tuple[Snapshot, dict[str, list[tuple[int, int]]]]:
    """A copy of `snap` whose files name zeros where `gone` chunks were, stored as real
    all-zero chunks so that it restores like any snapshot."""
    zero = repo._zero_chunks()

    def length_of(chunk: bytes) -> int | None:
        if chunk in zero:
            return zero[chunk]
        ref = known.get(chunk)
        return ref.raw_length if ref is not None else None

    writer = _Writer(repo, StoreStats())
    files: list[FileEntry] = []
    holes: dict[str, list[tuple[int, int]]] = {}
    try:
        for entry in snap.files:
            if not any(c in gone for c in entry.chunks):
                files.append(entry)
                continue
            chunks: list[bytes] = []
            lengths: list[int] = []
            lost: list[tuple[int, int]] = []
            what = f"file {entry.path}"
            for piece in place(entry.chunks, entry.size, length_of, what, entry.lengths):
                if piece.chunk is not None and piece.chunk not in gone:
                    chunks.append(piece.chunk)
                    lengths.append(piece.length)
                    continue
                lost.append((piece.offset, piece.length))
                for blob, n in _zeros(repo, writer, piece.length):
                    chunks.append(blob)
                    lengths.append(n)
            holes[entry.path] = merged(lost)
            # No change fingerprint: the next store reads the file rather than reuse this.
            files.append(replace(entry, chunks=chunks, change=None, lengths=lengths))
        writer.flush()
    finally:
        writer.drain()
    writer.write_index()
    meta = {
        **snap.meta,
        "repaired_from": snap.id,
        "lost": {path: [list(r) for r in ranges] for path, ranges in holes.items()},
    }
    tags = sorted({*snap.tags, "repaired"})
    copy = Snapshot(secrets.token_hex(16), snap.time, snap.host, snap.name, tags, files, meta=meta)
    return copy, holes


def _zeros(repo: Repository, writer: _Writer, length: int) -> list[tuple[bytes, int]]:
    """All-zero chunks covering `length` bytes (id, length), each stored unless it is."""
    ids = []
    cctx = repo._compressor()
    while length:
        n = min(length, repo.params.max_size)
        data = bytes(n)
        blob = repo.keys.chunk_id(data)
        writer.add(blob, data, cctx)
        ids.append((blob, n))
        length -= n
    return ids


def _move_aside(repo: Repository, lock: Lock, sid: str) -> None:
    """The snapshot's sealed bytes kept under damaged/ (for a pack restored from
    elsewhere, say), then removed from the snapshots prune and restore see."""
    lock.check()
    try:
        sealed = repo.backend.get(f"snapshots/{sid}")
    except MissingObject:
        return
    repo.backend.put(f"{ASIDE}{sid}", sealed)
    repo.backend.delete(f"snapshots/{sid}")
    vault_point("repair_snapshot_aside")


def repair_config(
    backend: Backend, *, passphrase: str | None = None, recovery_key: str | None = None
) -> str:
    """Put the config back from its copy once a key slot of the copy opens and the copy's
    MAC checks under that key; the repository's id."""
    try:
        raw = backend.get(CONFIG_COPY)
    except MissingObject:
        raise NotARepository(
            f"{backend.describe()} has no copy of its config ({CONFIG_COPY}): restore the "
            "config from a backup of the repository"
        ) from None
    try:
        config: dict[str, Any] = json.loads(raw)
        slots, repo_id = config["slots"], str(config["id"])
    except (ValueError, KeyError, TypeError):
        raise Corrupted(f"the config's copy ({CONFIG_COPY})") from None
    master = crypto.open_slots(slots, repo_id, passphrase=passphrase, recovery_key=recovery_key)
    keys = crypto.Keys(master, str(config.get("id_hash", "hmac-sha256")))
    try:
        body = _config_body(config)
    except KeyError:
        raise Corrupted(f"the config's copy ({CONFIG_COPY})", "fields are missing") from None
    if keys.mac(body) != config.get("mac"):
        raise WrongKey("the config's copy does not match the key that opened it")
    if backend.exists("config"):
        try:
            current = json.loads(backend.get("config"))
            if isinstance(current, dict) and current.get("mac") == config.get("mac"):
                raise VaultError("the config is present and sound: nothing to repair")
        except ValueError:
            pass  # a damaged config is what this replaces
    backend.put("config", raw)
    return repo_id
