"""A repository: open it with a key slot, store files as snapshots, restore and verify them.

Order of writes, so that a crash at any moment leaves every complete snapshot restorable:
packs first, then the index naming them, then the snapshot naming their blobs. A snapshot
therefore never refers to a blob whose pack and index entry are not already stored; a
crash leaves at worst packs no index names, or an index no snapshot uses, and prune
reclaims both.

Work is spread over threads: the chunker's scan, the keyed hash, zstd and AES-GCM all release
the GIL, so a store uses every core while holding a bounded number of chunks in memory.
"""

from __future__ import annotations

import errno
import json
import os
import queue
import secrets
import socket
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from ..crashpoints import vault_point
from . import _cdc, crypto
from .backends import Backend, read_range_into
from .chunker import READ_BYTES, WINDOWS, Chunker, ChunkerParams
from .errors import (
    ConfigMissing,
    Corrupted,
    IncompleteRestore,
    MissingObject,
    NeedsSecondKeySlot,
    NewerFormat,
    NoSpace,
    NotARepository,
    RepositoryExists,
    Salvaged,
    SnapshotNotFound,
    VaultError,
    WrongKey,
)
from .files_cache import FilesCache
from .holes import Piece, merged, place
from .locks import SHARED, Lock
from .outfile import RUN_PLAINTEXT_BYTES, RestoredFile, zeros
from .packs import (
    BlobRef,
    PackWriter,
    encode,
    open_chunk,
    open_chunk_at,
    open_chunk_into,
    pack_key,
    read_header,
)

FORMAT = 2
"""2: the config names its chunk id hash (`id_hash`); format 1 repositories use HMAC-SHA256
and are read and written as they are."""
PACK_BYTES = 16 * 1024 * 1024
# A restore reads at most this much of a pack at once, and assembles at most
# RUN_PLAINTEXT_BYTES of plaintext from it (besides a single chunk larger than that).
RUN_BYTES = 4 * 1024 * 1024
UPLOADS_IN_FLIGHT = 2
FILLING = 2
"""Packs a store fills at once, shared by its threads (see `_Writer`)."""
CONFIG_COPY = "keys/config"
"""Every write of the config writes this copy first: the config holds the key slots, so
without it no byte of the repository can be decrypted (restic keeps its keys apart from
its config for the same reason)."""
FILES_AT_ONCE = 2
CHUNK_LEVEL = 3
"""zstd level for chunks. On the bench's real data set (ext4 images of system trees, the
same image after a round of changes, a documentation tarball: 1,044 MiB of unique chunks
after dedup; one core, 2026-12-03): level 2 stored 308.2 MiB at 458 MiB/s, level 3 298.6
at 365, level 5 about 2.6% less than 3 at 2.4 times its time; recompressing at 5 or 6
the chunks that level 3 halves (most of them) stored 290.9 or 284.9 at a third of the
speed. Since zero runs are skipped by the chunker, a first store has room to spare (2.5x
restic, 1.8x the fastest borg at level 2), while the smallest peer (borg 1.2, zstd 3 on
2 MiB chunks) stored 9% less than level 2: level 3 is the trade. Any level reads back
the same: a repository may hold chunks of each."""
FLUSH_BYTES = 64 * 1024 * 1024  # a buffered restored file's write-back is started this often
Progress = Callable[[int], None]
_Placed = tuple[list[bytes] | int | None, int, int]
"""A run of a restored file at its offset, with its length (see `Repository._place`)."""


MAX_WORKERS = 64


def pack_capacity(pack_bytes: int, max_chunk: int) -> int:
    """A pack buffer's size: a full pack, then the largest chunk sealed past its end, and
    room for the header."""
    return pack_bytes + max_chunk + 64 * 1024


LANES = 2
"""Files a store chunks at once. The chunker's scan is one core's work per file (1.6 GB/s
on this machine kind), so a store of one file at a time left the second core to hashing and
sealing alone; restic, too, reads two files at once."""


def _serialised(progress: Progress | None) -> Progress | None:
    """`progress` as the lanes may call it at once: one call at a time, as it was written."""
    if progress is None:
        return None
    lock = threading.Lock()

    def said(n: int) -> None:
        with lock:
            progress(n)

    return said


def memory_bound(workers: int, params: ChunkerParams, pack_bytes: int = PACK_BYTES) -> int:
    """The most a store adds to its process's memory, in bytes (agent/vault/README.md):

        LANES x 3 windows         x (8 MiB read + the largest chunk)
      + (FILLING + UPLOADS + 1)   x pack buffer (a pack + the largest chunk + 64 KiB;
                                    the one more: an S3 upload copies the pack it sends)
      + workers                   x (the largest chunk, compressed on its own thread,
                                     + one zstd level-3 context, as zstd estimates it)
      + 32 MiB                    for the interpreter's own growth (index, thread stacks)

    Nothing in it grows with the size or the content of what is stored."""
    window = READ_BYTES + params.max_size
    packs = (FILLING + UPLOADS_IN_FLIGHT + 1) * pack_capacity(pack_bytes, params.max_size)
    cctx = zstandard.ZstdCompressionParameters.from_level(3).estimated_compression_context_size()
    lanes = LANES * WINDOWS * window
    return lanes + packs + workers * (params.max_size + cctx) + 32 * 1024 * 1024


def pool_size(workers: int | None = None) -> int:
    """The store's and restore's thread pool: given, or from `DOCKYARD_VAULT_WORKERS`, or
    the machine's cores (2 to 8: more cores than that read no faster from one disk or
    bucket, and each thread holds its own buffers, see `memory_bound`)."""
    if workers is None:
        setting = os.environ.get("DOCKYARD_VAULT_WORKERS", "").strip()
        if setting:
            try:
                workers = int(setting)
            except ValueError:
                raise VaultError(
                    f"DOCKYARD_VAULT_WORKERS is a number of threads, not {setting!r}"
                ) from None
        else:
            workers = min(8, max(2, os.cpu_count() or 2))
    if not 1 <= workers <= MAX_WORKERS:
        raise VaultError(f"the vault's workers are 1 to {MAX_WORKERS}, not {workers}")
    return workers


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class FileEntry:
    path: str
    size: int
    mode: int
    mtime: float
    chunks: list[bytes]
    change: str | None = None
    """The source's change fingerprint when stored (see `Source.change`), if it had one."""
    lengths: list[int] | None = None
    """Each chunk's length, so the file's layout is known without the index: a salvage
    places every intact chunk even when a lost pack took its index entries with it.
    None in snapshots written before lengths were kept."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path,
            "size": self.size,
            "mode": self.mode,
            "mtime": self.mtime,
            "chunks": b"".join(self.chunks).hex(),
        }
        if self.change is not None:
            out["change"] = self.change
        if self.lengths is not None:
            out["lengths"] = self.lengths
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FileEntry:
        raw = bytes.fromhex(d["chunks"])
        chunks = [raw[i : i + 32] for i in range(0, len(raw), 32)]
        change = d.get("change")
        lengths = d.get("lengths")
        if lengths is not None and (
            not isinstance(lengths, list)
            or len(lengths) != len(chunks)
            or sum(int(n) for n in lengths) != int(d["size"])
        ):
            lengths = None  # a layout that does not add up is not trusted
        return cls(
            d["path"],
            int(d["size"]),
            int(d["mode"]),
            float(d["mtime"]),
            chunks,
            str(change) if change is not None else None,
            [int(n) for n in lengths] if lengths is not None else None,
        )


@dataclass
class Snapshot:
    id: str
    time: str
    host: str
    name: str
    tags: list[str]
    files: list[FileEntry]
    pinned: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    """What was stored (the paths given, a VM's name), with the host the files cache's key;
    empty in snapshots written before it was kept, whose name stands for it."""

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "id": self.id,
            "time": self.time,
            "host": self.host,
            "name": self.name,
            "tags": self.tags,
            "files": [f.to_json() for f in self.files],
            "meta": self.meta,
            **({"source": self.source} if self.source else {}),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Snapshot:
        if int(d.get("format", 0)) > FORMAT:
            raise NewerFormat(f"snapshot {d.get('id')} was written by a newer version")
        return cls(
            d["id"],
            d["time"],
            d["host"],
            d["name"],
            list(d["tags"]),
            [FileEntry.from_json(f) for f in d["files"]],
            meta=dict(d.get("meta", {})),
            source=str(d.get("source", "")),
        )


@dataclass
class StoreStats:
    files: int = 0
    files_unchanged: int = 0
    """Files whose chunks came from the previous snapshot without reading them."""
    bytes_read: int = 0
    chunks: int = 0
    new_chunks: int = 0
    new_bytes_stored: int = 0
    packs: int = 0


@dataclass
class Source:
    """One file to store: its name in the snapshot and a way to open it."""

    path: str
    open: Callable[[], AbstractContextManager[BinaryIO]]
    size: int = 0
    mode: int = 0o644
    mtime: float = 0.0
    change: str | None = None
    """Size, mtime, ctime, inode and device of a file: when the newest snapshot holds the
    same name with the same fingerprint, its chunks are reused without reading the file
    (as restic and borg do; ctime changes on every write and cannot be set back). None for
    streams, which are always read."""

    @classmethod
    def from_path(cls, path: Path, name: str | None = None) -> Source:
        st = path.stat()
        return cls(
            name or path.name,
            lambda: open(path, "rb"),
            st.st_size,
            st.st_mode & 0o7777,
            st.st_mtime,
            f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev}",
        )


class _Scratch(threading.local):
    """The buffers one restoring thread reads runs into and opens chunks into, kept from
    run to run. A fresh buffer per chunk cost a page fault per 4 KiB: a 2 GB restore made
    450,000 of them and spent more time in the kernel than in AES-GCM, zstd and BLAKE3
    together (measured in process on this repository's benchmark data)."""

    def __init__(self) -> None:
        self.run = bytearray()
        self.body = bytearray()

    def sized(self, run_bytes: int, body_bytes: int) -> tuple[bytearray, bytearray]:
        if len(self.run) < run_bytes:
            self.run = bytearray(run_bytes)
        if len(self.body) < body_bytes:
            self.body = bytearray(body_bytes)
        return self.run, self.body


class Repository:
    """An open repository. Not shared between processes except through the lock protocol."""

    def __init__(
        self,
        backend: Backend,
        config: dict[str, Any],
        master: bytes,
        *,
        workers: int | None = None,
        cache: Path | None = None,
        fetched: dict[str, bytes] | None = None,
    ) -> None:
        self.backend = backend
        self.config = config
        self.id: str = config["id"]
        self.keys = crypto.Keys(master, str(config.get("id_hash", "hmac-sha256")))
        if self.keys.mac(_config_body(config)) != config.get("mac"):
            raise WrongKey("the repository's config does not match its key")
        self.params = ChunkerParams.from_json(config["chunker"])
        self.pack_bytes = int(config["pack_bytes"])
        self.index: dict[bytes, BlobRef] = {}
        self.index_files: set[str] = set()
        self.index_packs: set[str] = set()
        """Every pack a readable index file names (`index` keeps one place per blob, so a
        pack whose blobs were all stored again elsewhere is named here only)."""
        self.damaged_indexes: dict[str, str] = {}
        """Index files that would not open, each with its problem: their packs are still
        there, and `vault repair index` re-reads their headers."""
        self.damaged_snapshots: dict[str, str] = {}
        """Snapshot files that would not open at the last `snapshots()`, with the problem."""
        self._lock = threading.Lock()
        self.workers = pool_size(workers)
        self._scratch = _Scratch()  # each reading thread's own buffers
        self._local = threading.local()
        self._zero_ids: dict[bytes, int] | None = None
        self._zero_by_length: dict[int, bytes] = {}
        self._zero_lock = threading.Lock()
        self.files_cache = FilesCache(cache, self.keys, self.id)
        """Where `cache` is a folder, each source's last file list is kept there, so a
        store does not open every snapshot to find it (None: rebuilt on every store)."""
        self._fetched = fetched or {}
        """Sealed index files read while the key was derived (`open`); index files never
        change, so these bytes are the files' bytes. Used by the first load only."""
        try:
            self.load_index()
        finally:
            self._fetched = {}

    # --- creating and opening ----------------------------------------------------------

    @classmethod
    def init(
        cls,
        backend: Backend,
        passphrase: str,
        *,
        params: ChunkerParams | None = None,
        pack_bytes: int = PACK_BYTES,
        cost: crypto.ScryptCost | None = None,
        id_hash: str = "blake3",
        workers: int | None = None,
        cache: Path | None = None,
    ) -> Repository:
        if id_hash not in crypto.ID_HASHES:
            raise VaultError(f"the chunk id hash is one of {', '.join(crypto.ID_HASHES)}")
        if backend.exists("config"):
            raise RepositoryExists(f"{backend.describe()} already holds a repository")
        if backend.exists(CONFIG_COPY):
            raise RepositoryExists(
                f"{backend.describe()} holds a repository whose config is missing: "
                "`dockyard-agent vault repair config` restores it from its copy"
            )
        if any(True for _ in backend.list("data/")):
            raise RepositoryExists(
                f"{backend.describe()} holds packs but no config: a damaged repository, "
                "not an empty one (see `dockyard-agent vault repair config`)"
            )
        master = crypto.new_master()
        repo_id = secrets.token_hex(16)
        config: dict[str, Any] = {
            "format": FORMAT if id_hash != "hmac-sha256" else 1,
            "id": repo_id,
            "created": _now(),
            "chunker": (params or ChunkerParams()).to_json(),
            "pack_bytes": pack_bytes,
            "slots": [crypto.passphrase_slot(master, repo_id, passphrase, cost)],
        }
        if id_hash != "hmac-sha256":
            config["id_hash"] = id_hash
        config["mac"] = crypto.Keys(master).mac(_config_body(config))
        body = json.dumps(config, indent=1).encode()
        if not backend.put_new("config", body):
            raise RepositoryExists(f"{backend.describe()} already holds a repository")
        backend.put(CONFIG_COPY, body)
        return cls(backend, config, master, workers=workers, cache=cache)

    @classmethod
    def open(
        cls,
        backend: Backend,
        *,
        passphrase: str | None = None,
        recovery_key: str | None = None,
        workers: int | None = None,
        cache: Path | None = None,
    ) -> Repository:
        config = read_config(backend)
        # The key derivation (scrypt, about half a second by design) needs one core and
        # lets go of the GIL; the sealed index files need no key to be fetched, so they
        # are read meanwhile and only opened once the key is known. Nothing is weakened:
        # the same slots are opened the same way, and every index is still authenticated.
        with ThreadPoolExecutor(1, thread_name_prefix="vault-kdf") as kdf:
            derived = kdf.submit(
                crypto.open_slots,
                config["slots"],
                config["id"],
                passphrase=passphrase,
                recovery_key=recovery_key,
            )
            fetched = _fetch_indexes(backend, derived)
            master = derived.result()
        return cls(backend, config, master, workers=workers, cache=cache, fetched=fetched)

    # --- key slots ---------------------------------------------------------------------

    def add_recovery_key(self) -> str:
        """A new recovery-key slot; the key is returned once and stored nowhere else."""
        key = crypto.new_recovery_key()
        self._add_slot(crypto.recovery_slot(self.keys.master, self.id, key))
        return key

    def add_passphrase(self, passphrase: str, cost: crypto.ScryptCost | None = None) -> None:
        self._add_slot(crypto.passphrase_slot(self.keys.master, self.id, passphrase, cost))

    def _add_slot(self, slot: dict[str, Any]) -> None:
        config = dict(self.config)
        config["slots"] = [*config["slots"], slot]
        body = json.dumps(config, indent=1).encode()
        self.backend.put(CONFIG_COPY, body)
        self.backend.put("config", body)
        self.config = config

    def slots(self) -> list[dict[str, str]]:
        return [{"id": s["id"], "kind": s["kind"]} for s in self.config["slots"]]

    def require_second_slot(self) -> None:
        """Modules call this before they replace a user's files with a stub."""
        kinds = {s["kind"] for s in self.config["slots"]}
        if len(self.config["slots"]) < 2 or kinds == {"passphrase"}:
            raise NeedsSecondKeySlot(
                "add a recovery key (`dockyard-agent vault key add-recovery`) or a KMS slot "
                "before files are replaced by stubs: with one slot, losing it loses the data"
            )

    # --- index ---------------------------------------------------------------------------

    def load_index(self) -> None:
        """Read the index files written since the last load. Index files are immutable and
        only prune removes any; when one this process read is gone, read them all again."""
        listed = {key.rsplit("/", 1)[1] for key, _size in self.backend.list("index/")}
        if self.index_files <= listed:
            index, names, packs_named = (
                dict(self.index),
                set(self.index_files),
                set(self.index_packs),
            )
        else:
            index, names, packs_named = {}, set(), set()
        damaged = {n: p for n, p in self.damaged_indexes.items() if n in listed}
        for name in sorted(listed - names - set(damaged)):
            try:
                packs = self._read_index(name)
                entries = [
                    (bytes.fromhex(blob_hex), BlobRef(pack, int(offset), int(length), int(raw)))
                    for pack, rows in packs.items()
                    for blob_hex, offset, length, raw in rows
                ]
            except MissingObject:
                continue  # removed by a prune since it was listed; its successor is read
            except (Corrupted, ValueError, TypeError, AttributeError) as e:
                # One damaged index hides only the blobs it names, which the packs'
                # own headers still list: everything else stays readable.
                damaged[name] = str(e) if isinstance(e, Corrupted) else f"does not parse: {e}"
                continue
            index.update(entries)
            names.add(name)
            packs_named.update(packs)
        self.index, self.index_files, self.damaged_indexes = index, names, damaged
        self.index_packs = packs_named

    def reload_index(self) -> None:
        """Forget what was read and read every index file again (after a prune or a
        repair replaced them)."""
        self.index, self.index_files, self.damaged_indexes = {}, set(), {}
        self.index_packs = set()
        self.load_index()

    def _read_index(self, name: str) -> dict[str, list[list[Any]]]:
        sealed = self._fetched.pop(name, None)
        if sealed is None:
            sealed = self.backend.get(f"index/{name}")
        plain = self.keys.open(sealed, f"dockyard-vault/v1/index|{name}".encode(), "index")
        try:
            doc = json.loads(zstandard.ZstdDecompressor().decompress(plain))
        except (ValueError, zstandard.ZstdError) as e:
            raise Corrupted(f"index {name}", str(e)) from None
        if not isinstance(doc, dict) or not isinstance(doc.get("packs"), dict):
            raise Corrupted(f"index {name}", "not an index document")
        if int(doc.get("format", 0)) > FORMAT:
            raise NewerFormat("the index was written by a newer version of Dockyard")
        packs: dict[str, list[list[Any]]] = doc["packs"]
        return packs

    def _write_index(self, packs: dict[str, list[list[Any]]]) -> str:
        name = secrets.token_hex(16)
        doc = {"format": FORMAT, "packs": packs}
        plain = zstandard.ZstdCompressor(level=3).compress(json.dumps(doc).encode())
        aad = f"dockyard-vault/v1/index|{name}".encode()
        self.backend.put(f"index/{name}", self.keys.seal(plain, aad))
        self.index_files.add(name)
        return name

    # --- storing -------------------------------------------------------------------------

    def _compressor(self) -> zstandard.ZstdCompressor:
        c = getattr(self._local, "cctx", None)
        if c is None:
            c = self._local.cctx = zstandard.ZstdCompressor(level=CHUNK_LEVEL)
        return c

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        d = getattr(self._local, "dctx", None)
        if d is None:
            d = self._local.dctx = zstandard.ZstdDecompressor()
        return d

    def _seal(self, chunk: memoryview, writer: _Writer) -> bytes:
        """The chunk's id, after sealing it into a pack unless it is stored already.

        An all-zero chunk (most of a disk image: the chunker cuts zero runs at its
        maximum size) is known by its length: its id is hashed once per length and
        store, not once per chunk."""
        if _cdc.all_zero(chunk):
            blob_id = self._zero_by_length.get(len(chunk))
            if blob_id is None:
                # The pool's threads seal at once: the first to miss hashes, the rest wait.
                with self._zero_lock:
                    blob_id = self._zero_by_length.get(len(chunk))
                    if blob_id is None:
                        blob_id = self._zero_by_length[len(chunk)] = self.keys.chunk_id(chunk)
        else:
            blob_id = self.keys.chunk_id(chunk)
        writer.add(blob_id, chunk, self._compressor())
        return blob_id

    def store(
        self,
        sources: Iterable[Source],
        *,
        name: str = "",
        tags: Iterable[str] = (),
        meta: dict[str, Any] | None = None,
        progress: Progress | None = None,
        lock_timeout: float = 600.0,
        rescan: bool = False,
        source: str | None = None,
        lanes: int = LANES,
    ) -> tuple[Snapshot, StoreStats]:
        """Store the sources as one new snapshot; nothing is visible until it is complete.

        `lanes` files are read at once, so `sources` is asked for the next file before the
        ones before it are read. With `lanes=1` every file is read on the calling thread,
        and the next is asked for only once the one before is: for sources made from what
        the earlier ones read (a manifest of their hashes).

        Holds a shared lock throughout (other stores go on; prune waits). `source` names
        what is stored (default: `name`): a file whose fingerprint is the one this host's
        newest snapshot of that source recorded is not read again, unless `rescan`."""
        source = name if source is None else source
        host = socket.gethostname()
        with Lock(self.backend, SHARED).acquire(lock_timeout) as lock:
            self.load_index()
            previous = {} if rescan else self._previous_files(host, source)
            snapshot, stats = self._store(
                sources, name, tags, meta, progress, lock, previous, source, lanes
            )
        self.files_cache.save(host, source, snapshot.files)
        return snapshot, stats

    def _store(
        self,
        sources: Iterable[Source],
        name: str,
        tags: Iterable[str],
        meta: dict[str, Any] | None,
        progress: Progress | None,
        lock: Lock,
        previous: dict[str, FileEntry],
        source: str,
        lanes: int = LANES,
    ) -> tuple[Snapshot, StoreStats]:
        stats = StoreStats()
        writer = _Writer(self, stats)
        try:
            files = self._chunk_all(sources, writer, stats, progress, previous, lanes)
            writer.flush()
        finally:
            writer.drain()
        writer.write_index()
        vault_point("index_put")
        lock.check()
        snapshot = Snapshot(
            secrets.token_hex(16),
            _now(),
            socket.gethostname(),
            name,
            sorted(set(tags)),
            files,
            meta=meta or {},
            source=source,
        )
        self._write_snapshot(snapshot)
        vault_point("snapshot_put")
        return snapshot, stats

    def _chunk_all(
        self,
        sources: Iterable[Source],
        writer: _Writer,
        stats: StoreStats,
        progress: Progress | None,
        previous: dict[str, FileEntry],
        lanes: int = LANES,
    ) -> list[FileEntry]:
        """Chunk up to `lanes` files at once, each on a lane thread of its own with its own
        chunker (the C scan releases the GIL), and hash, compress and seal on the pool (see
        `_chunk_file`); the files come out in the sources' order whatever lane ends first.
        One lane is the calling thread itself. Unchanged files (the files cache) pass
        without being read."""
        if lanes < 1:
            raise VaultError("a store reads with one lane at least")
        files: list[FileEntry] = []
        free: queue.SimpleQueue[Chunker] = queue.SimpleQueue()
        for _ in range(lanes):
            free.put(Chunker(self.keys.gear, self.params))
        said = _serialised(progress) if lanes > 1 else progress
        ahead: deque[tuple[Source, FileEntry | None, Future[tuple[list[bytes], list[int]]] | None]]
        ahead = deque()

        def settle_first() -> None:
            source, unchanged, chunking = ahead.popleft()
            stats.files += 1
            if unchanged is not None:
                files.append(unchanged)
                stats.files_unchanged += 1
                stats.chunks += len(unchanged.chunks)
                return
            assert chunking is not None
            ids, lengths = chunking.result()
            size = sum(lengths)
            stats.chunks += len(ids)
            stats.bytes_read += size
            files.append(
                FileEntry(source.path, size, source.mode, source.mtime, ids, source.change, lengths)
            )

        def start(source: Source) -> Future[tuple[list[bytes], list[int]]]:
            if lane_pool is not None:
                return lane_pool.submit(self._chunk_source, source, free, pool, writer, said)
            here: Future[tuple[list[bytes], list[int]]] = Future()
            here.set_result(self._chunk_source(source, free, pool, writer, said))
            return here

        with ExitStack() as running:
            pool = running.enter_context(
                ThreadPoolExecutor(self.workers, thread_name_prefix="vault")
            )
            lane_pool = (
                running.enter_context(ThreadPoolExecutor(lanes, thread_name_prefix="vault-lane"))
                if lanes > 1
                else None
            )
            for source in sources:
                before = previous.get(source.path)
                if (
                    source.change is not None
                    and before is not None
                    and before.change == source.change
                    and all(c in self.index for c in before.chunks)
                ):
                    ahead.append(
                        (source, replace(before, mode=source.mode, mtime=source.mtime), None)
                    )
                    if said:
                        said(before.size)
                else:
                    ahead.append((source, None, start(source)))
                # What is settled leaves at once; what is chunking holds at most a few behind.
                while ahead and (
                    ahead[0][2] is None or ahead[0][2].done() or len(ahead) > 2 * lanes
                ):
                    settle_first()
            while ahead:
                settle_first()
        return files

    def _chunk_source(
        self,
        source: Source,
        free: queue.SimpleQueue[Chunker],
        pool: ThreadPoolExecutor,
        writer: _Writer,
        progress: Progress | None,
    ) -> tuple[list[bytes], list[int]]:
        """One file on a lane, with a chunker no other lane holds meanwhile."""
        chunker = free.get()
        try:
            with source.open() as stream:
                return self._chunk_file(stream, chunker, pool, writer, progress)
        finally:
            free.put(chunker)

    def _chunk_file(
        self,
        stream: BinaryIO,
        chunker: Chunker,
        pool: ThreadPoolExecutor,
        writer: _Writer,
        progress: Progress | None,
    ) -> tuple[list[bytes], list[int]]:
        """The ids of a file's chunks, in order, and their lengths.

        The chunks are views of the chunker's windows, so what is in flight is bounded by
        the windows, not by a count of chunks: this thread may cut up to two windows ahead
        of the pool and never waits for a single slow chunk."""
        ids: list[bytes] = []
        lengths: list[int] = []
        pending: deque[tuple[int, Future[bytes]]] = deque()

        def settle(through: int) -> None:
            while pending and pending[0][0] <= through:
                ids.append(pending.popleft()[1].result())

        for number, chunk in chunker.views(stream, settle):
            lengths.append(len(chunk))
            pending.append((number, pool.submit(self._seal, chunk, writer)))
            if progress:
                progress(len(chunk))
        settle(sys.maxsize)
        return ids, lengths

    def _previous_files(self, host: str, source: str) -> dict[str, FileEntry]:
        """The files of this host's newest snapshot of the source, by name: from the files
        cache, else (once) from the repository's snapshots."""
        cached = self.files_cache.load(host, source)
        if cached is not None:
            return cached
        mine = [s for s in self.snapshots() if s.host == host and (s.source or s.name) == source]
        if not mine:
            return {}
        newest = max(mine, key=lambda s: (s.time, s.id))
        return {f.path: f for f in newest.files if f.change is not None}

    def _write_snapshot(self, snapshot: Snapshot) -> None:
        plain = zstandard.ZstdCompressor(level=3).compress(json.dumps(snapshot.to_json()).encode())
        aad = f"dockyard-vault/v1/snapshot|{snapshot.id}".encode()
        self.backend.put(f"snapshots/{snapshot.id}", self.keys.seal(plain, aad))

    # --- reading -------------------------------------------------------------------------

    def snapshots(self) -> list[Snapshot]:
        """Every snapshot, oldest first: one listing of snapshots and one of pins."""
        pins = self.pins()
        out = []
        damaged: dict[str, str] = {}
        for key, _size in self.backend.list("snapshots/"):
            full = key.rsplit("/", 1)[1]
            try:
                snap = self._load_snapshot(full, full)
            except SnapshotNotFound:
                continue  # forgotten by a prune since it was listed
            except Corrupted as e:
                damaged[full] = str(e)  # only this snapshot is lost; the others list
                continue
            snap.pinned = full in pins
            out.append(snap)
        self.damaged_snapshots = damaged
        return sorted(out, key=lambda s: (s.time, s.id))

    def resolve(self, snapshot_id: str) -> str:
        """A snapshot's full id from the id or a unique prefix of it, as with git."""
        wanted = snapshot_id.strip().lower()
        if not wanted or any(c not in "0123456789abcdef" for c in wanted):
            raise SnapshotNotFound(f"no snapshot {snapshot_id!r}")
        names = [k.rsplit("/", 1)[1] for k, _ in self.backend.list("snapshots/")]
        matches = [n for n in names if n.startswith(wanted)]
        if len(matches) > 1:
            raise SnapshotNotFound(f"{snapshot_id!r} names more than one snapshot")
        if not matches:
            raise SnapshotNotFound(f"no snapshot {snapshot_id!r}")
        return matches[0]

    def snapshot(self, snapshot_id: str) -> Snapshot:
        full = self.resolve(snapshot_id)
        snap = self._load_snapshot(full, snapshot_id)
        snap.pinned = self.backend.exists(f"pins/{full}")
        return snap

    def _load_snapshot(self, full: str, asked: str) -> Snapshot:
        try:
            sealed = self.backend.get(f"snapshots/{full}")
        except MissingObject:
            raise SnapshotNotFound(f"no snapshot {asked!r}") from None
        aad = f"dockyard-vault/v1/snapshot|{full}".encode()
        plain = self.keys.open(sealed, aad, f"snapshot {full}")
        try:
            doc = json.loads(zstandard.ZstdDecompressor().decompress(plain))
            return Snapshot.from_json(doc)
        except NewerFormat:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, zstandard.ZstdError) as e:
            raise Corrupted(f"snapshot {full}", f"does not parse: {e}") from None

    def _ref(self, blob_id: bytes) -> BlobRef:
        ref = self.index.get(blob_id)
        if ref is None:
            with self._lock:  # another process may have stored it since we loaded the index
                if blob_id not in self.index:
                    self.load_index()
            ref = self.index.get(blob_id)
        if ref is None:
            raise MissingObject(f"chunk {blob_id.hex()[:16]} (in no index)")
        return ref

    def read_chunk(self, blob_id: bytes) -> bytes:
        return self._read_run([blob_id])[0]

    def _read_run(self, ids: list[bytes]) -> list[bytes]:
        """Chunks stored back to back in one pack, with one ranged read, each its own
        bytes (read through this thread's buffers and copied out of them)."""
        return [bytes(piece) for piece in self._open_run(ids, self._scratch)]

    def _sealed_run(
        self, ids: list[bytes], scratch: _Scratch
    ) -> Iterator[tuple[bytes, BlobRef, memoryview]]:
        """Chunks stored back to back in one pack, read with one ranged read into this
        thread's buffer: each with its index entry and its sealed bytes (a view of it)."""
        refs = [self._ref(i) for i in ids]
        start, end = refs[0].offset, refs[-1].offset + refs[-1].length
        run, _ = scratch.sized(end - start, self.params.max_size + 1)
        view = memoryview(run)[: end - start]
        if read_range_into(self.backend, pack_key(refs[0].pack), start, view) != end - start:
            raise Corrupted(f"pack {refs[0].pack[:16]}", "shorter than its index says")
        for blob_id, ref in zip(ids, refs, strict=True):
            yield blob_id, ref, view[ref.offset - start : ref.offset - start + ref.length]

    def _open_run(self, ids: list[bytes], scratch: _Scratch) -> Iterator[bytes | memoryview]:
        """A run's chunks, each valid only until the next one is asked for (they are
        opened into this thread's buffer), so the caller uses it first."""
        _, body = scratch.sized(0, self.params.max_size + 1)
        dctx = self._decompressor()
        for blob_id, ref, sealed in self._sealed_run(ids, scratch):
            yield open_chunk_into(self.keys, blob_id, sealed, ref.raw_length, dctx, body)

    def _open_run_at(self, ids: list[bytes], scratch: _Scratch, out: memoryview, at: int) -> None:
        """A run's chunks opened into `out` from `at` on, back to back (see open_chunk_at)."""
        _, body = scratch.sized(0, self.params.max_size + 1)
        dctx = self._decompressor()
        for blob_id, ref, sealed in self._sealed_run(ids, scratch):
            open_chunk_at(self.keys, blob_id, sealed, ref.raw_length, dctx, out, at, body)
            at += ref.raw_length

    def _runs(self, ids: list[bytes], zeros: dict[bytes, int]) -> Iterator[list[bytes] | int]:
        """Consecutive chunks that sit back to back in one pack, up to RUN_BYTES (and
        RUN_PLAINTEXT_BYTES of plaintext) a run; a chunk in no index is a run of its own, so its
        error names only its file. A chunk in `zeros` (all zero bytes, known by its id) is
        given as its length: nothing to read."""
        run: list[bytes] = []
        last: BlobRef | None = None
        size = raw = 0
        for blob_id in ids:
            hole = zeros.get(blob_id)
            if hole is not None:
                if run:
                    yield run
                    run, size, raw, last = [], 0, 0, None
                yield hole
                continue
            ref = self.index.get(blob_id)
            follows = (
                ref is not None
                and last is not None
                and ref.pack == last.pack
                and ref.offset == last.offset + last.length
                and size + ref.length <= RUN_BYTES
                and raw + ref.raw_length <= RUN_PLAINTEXT_BYTES
            )
            if run and not follows:
                yield run
                run, size, raw = [], 0, 0
            run.append(blob_id)
            size += ref.length if ref is not None else 0
            raw += ref.raw_length if ref is not None else 0
            last = ref
        if run:
            yield run

    def _zero_chunks(self) -> dict[bytes, int]:
        """The ids of all-zero chunks at the sizes the chunker cuts a long run of zeros
        into (its maximum, and its minimum where the key makes zeros a boundary), so a
        restore need not read them: an id is a keyed hash of the content, so the id says
        what the bytes are. Other all-zero chunks are found once read."""
        if self._zero_ids is None:
            sizes = {self.params.min_size, self.params.max_size}
            self._zero_ids = {self.keys.chunk_id(bytes(n)): n for n in sizes}
        return self._zero_ids

    def _chunks(
        self, ids: list[bytes], pool: ThreadPoolExecutor, depth: int
    ) -> Iterator[bytes | int]:
        """The chunks in order, fetched and checked ahead of the writer: runs of a pack in
        one read each, `depth` runs in flight (reads wait on storage). A known all-zero
        chunk comes as its length."""
        pending: deque[Future[list[bytes]] | int] = deque()

        def ready(item: Future[list[bytes]] | int) -> list[bytes] | list[int]:
            return [item] if isinstance(item, int) else item.result()

        for run in self._runs(ids, self._zero_chunks()):
            pending.append(run if isinstance(run, int) else pool.submit(self._read_run, run))
            if len(pending) > depth:
                yield from ready(pending.popleft())
        while pending:
            yield from ready(pending.popleft())

    def restore(
        self,
        snapshot_id: str,
        target: Path,
        *,
        paths: Iterable[str] | None = None,
        progress: Progress | None = None,
        sparse: bool = True,
        salvage: bool = False,
    ) -> Snapshot:
        """Restore files to `target`; damaged files are named and the rest restored.
        `sparse` leaves runs of zeros as holes, as a VM's disk image expects: the same
        bytes read back, and no time or space spent writing zeros.

        With `salvage`, a file with damaged or lost chunks is still restored in full
        length, those ranges left as zeros; `Salvaged` then names every such range
        (the files are in place when it is raised)."""
        snap = self.snapshot(snapshot_id)
        wanted = set(paths) if paths is not None else None
        entries = [e for e in snap.files if wanted is None or e.path in wanted]
        damaged: dict[str, str] = {}
        holes: dict[str, list[tuple[int, int]]] = {}
        if salvage:
            self.load_index()
        # Files are written FILES_AT_ONCE at a time (each fsynced, so one file's flush
        # overlaps the next one's reads), sharing one bounded read-ahead.
        depth = max(2, self.workers * 4 // FILES_AT_ONCE)
        with (
            ThreadPoolExecutor(self.workers * 4, thread_name_prefix="vault") as pool,
            ThreadPoolExecutor(FILES_AT_ONCE, thread_name_prefix="vault-file") as writers,
        ):
            for path, problem, lost in writers.map(
                lambda e: self._restore_file(e, target, pool, depth, progress, sparse, salvage),
                entries,
            ):
                if problem is not None:
                    damaged[path] = problem
                if lost:
                    holes[path] = lost
        if wanted is not None:
            missing = wanted - {f.path for f in snap.files}
            if missing:
                raise VaultError(f"not in snapshot {snap.id[:8]}: {', '.join(sorted(missing))}")
        if damaged:
            raise IncompleteRestore(damaged)
        if holes:
            raise Salvaged(holes)
        return snap

    def _restore_file(
        self,
        entry: FileEntry,
        target: Path,
        pool: ThreadPoolExecutor,
        depth: int,
        progress: Progress | None,
        sparse: bool,
        salvage: bool = False,
    ) -> tuple[str, str | None, list[tuple[int, int]]]:
        """One file, through a partial name, fsynced, then renamed into place; returns the
        problem instead of raising, so the other files go on, and (salvaging) the ranges
        left as zeros. A full target stops the whole restore: nothing half written stays."""
        out = _safe_join(target, entry.path)
        partial = out.with_name(out.name + ".dockyard-partial")
        lost: list[tuple[int, int]] = []
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            file = RestoredFile(partial, entry.size, sparse=sparse)
            try:
                self._write_at(entry, file, pool, depth, progress, lost if salvage else None)
                os.fsync(file.fd)
            finally:
                file.close()
            os.chmod(partial, entry.mode or 0o644)
            os.utime(partial, (entry.mtime, entry.mtime))
            os.replace(partial, out)
        except (Corrupted, MissingObject) as e:
            partial.unlink(missing_ok=True)
            return entry.path, str(e), []
        except OSError as e:
            partial.unlink(missing_ok=True)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace(
                    f"the restore target {target} is full ({entry.path} did not fit); "
                    "nothing half written was left"
                ) from None
            raise VaultError(f"cannot write {out}: {e.strerror or e}") from None
        return entry.path, None, merged(lost)

    def restore_stream(self, snapshot_id: str, path: str, out: BinaryIO) -> FileEntry:
        """One file of a snapshot, written to a stream."""
        snap = self.snapshot(snapshot_id)
        for entry in snap.files:
            if entry.path == path:
                with ThreadPoolExecutor(self.workers, thread_name_prefix="vault") as pool:
                    self._write_file(entry, out, pool)
                return entry
        raise VaultError(f"not in snapshot {snap.id[:8]}: {path}")

    def _write_at(
        self,
        entry: FileEntry,
        file: RestoredFile,
        pool: ThreadPoolExecutor,
        depth: int,
        progress: Progress | None,
        lost: list[tuple[int, int]] | None = None,
    ) -> None:
        """A file written by the pool's threads, each run at its own offset (from the
        index's chunk lengths), so reading, opening and writing one large file all go on
        in parallel rather than through one writer.

        Given `lost` (salvaging), chunks that are lost or will not open are left as
        zeros and their ranges appended to it; otherwise the first such chunk fails the
        file."""
        placed = self._place(entry, lost is not None)
        scratch = self._scratch
        lost_lock = threading.Lock()

        def hole(at: int, length: int) -> None:
            file.write_zeros(length, at)
            if lost is not None:
                with lost_lock:
                    lost.append((at, length))

        def put(run: list[bytes] | int | None, at: int, length: int) -> int:
            """One run written at `at` (None: a hole, salvaging); the bytes it covers."""
            if run is None:
                hole(at, length)
            elif isinstance(run, int):
                file.write_zeros(run, at)
            elif lost is None:
                file.write_run(lambda out, i: self._open_run_at(run, scratch, out, i), at, length)
            else:
                try:
                    file.write_run(
                        lambda out, i: self._open_run_at(run, scratch, out, i), at, length
                    )
                except (Corrupted, MissingObject):
                    for one in run:  # chunk by chunk: only the damaged ones become zeros
                        at += self._salvage_chunk(one, file, at, hole)
            return length

        pending: deque[Future[int]] = deque()
        # Written through the page cache, the disk starts on what is written while the
        # rest is still being opened: every FLUSH_BYTES a flush of the file so far runs
        # beside the writers, so the fsync at the end waits for the last stretch only.
        flushes: list[Future[None]] = []
        unflushed = 0

        def written(future: Future[int]) -> None:
            nonlocal unflushed
            covered = future.result()
            if progress:
                progress(covered)
            unflushed += covered
            if unflushed >= FLUSH_BYTES and all(f.done() for f in flushes):
                if not file.direct:
                    flushes.append(pool.submit(os.fdatasync, file.fd))
                unflushed = 0

        try:
            for run, at, length in placed:
                pending.append(pool.submit(put, run, at, length))
                if len(pending) > depth:
                    written(pending.popleft())
            while pending:
                written(pending.popleft())
        finally:
            for future in pending:  # a run failed: no thread may write to fd once closed
                future.cancel()
            outstanding: list[Future[Any]] = [*pending, *flushes]
            wait(outstanding)
        for flush in flushes:  # a write-back error seen by a flush is this file's error
            flush.result()

    def _salvage_chunk(
        self, chunk: bytes, file: RestoredFile, at: int, hole: Callable[[int, int], None]
    ) -> int:
        """One chunk written at `at`, or left as a hole if it will not open; its length."""
        size = self.index[chunk].raw_length

        def fill(out: memoryview, i: int) -> None:
            self._open_run_at([chunk], self._scratch, out, i)

        try:
            file.write_run(fill, at, size)
        except (Corrupted, MissingObject):
            hole(at, size)
        return size

    def _place(self, entry: FileEntry, salvage: bool) -> list[_Placed]:
        """A file's runs with the offset and length of each: a run of chunks, a known
        all-zero chunk (its length), or, salvaging, a hole (None) where chunks are lost."""
        zero = self._zero_chunks()
        if not salvage:
            placed: list[_Placed] = []
            offset = 0
            for run in self._runs(entry.chunks, zero):
                length = run if isinstance(run, int) else sum(self._ref(i).raw_length for i in run)
                placed.append((run, offset, length))
                offset += length
            if offset != entry.size:
                raise Corrupted(f"file {entry.path}", "its chunks' sizes differ from the snapshot")
            return placed

        def length_of(chunk: bytes) -> int | None:
            ref = self.index.get(chunk)
            return zero.get(chunk, ref.raw_length if ref is not None else None)

        pieces = place(entry.chunks, entry.size, length_of, f"file {entry.path}", entry.lengths)
        out: list[_Placed] = []
        group: list[Piece] = []

        def flush() -> None:
            """The group's chunks in runs; each run's length is its pieces' lengths."""
            ids = [p.chunk for p in group if p.chunk is not None]
            at = 0
            for run in self._runs(ids, zero):
                count = 1 if isinstance(run, int) else len(run)
                length = sum(p.length for p in group[at : at + count])
                out.append((run, group[at].offset, length))
                at += count
            group.clear()

        for piece in pieces:
            if piece.chunk is None or (piece.chunk not in self.index and piece.chunk not in zero):
                flush()  # lost with its pack and index entry: nothing to read
                out.append((None, piece.offset, piece.length))
            else:
                group.append(piece)
        flush()
        return out

    def _write_file(self, entry: FileEntry, out: BinaryIO, pool: ThreadPoolExecutor) -> None:
        """A file written in order to a stream (zeros included)."""
        written = 0
        for piece in self._chunks(entry.chunks, pool, self.workers * 4):
            n = piece if isinstance(piece, int) else len(piece)
            out.write(zeros(n) if isinstance(piece, int) else piece)
            written += n
        if written != entry.size:
            raise Corrupted(f"file {entry.path}", "restored size differs from the snapshot")

    # --- pins ------------------------------------------------------------------------------

    def pins(self) -> set[str]:
        return {k.rsplit("/", 1)[1] for k, _ in self.backend.list("pins/")}

    def pin(self, snapshot_id: str, reason: str) -> None:
        snap = self.snapshot(snapshot_id)
        body = json.dumps({"reason": reason, "time": _now()}).encode()
        self.backend.put(f"pins/{snap.id}", body)

    def release(self, snapshot_id: str) -> None:
        snap = self.snapshot(snapshot_id)
        self.backend.delete(f"pins/{snap.id}")

    # --- verifying -------------------------------------------------------------------------

    def blobs_by_pack(self) -> dict[str, list[tuple[bytes, BlobRef]]]:
        """The index turned around: for each pack it names, its blobs and where they are."""
        packs: dict[str, list[tuple[bytes, BlobRef]]] = {}
        for blob_id, ref in self.index.items():
            packs.setdefault(ref.pack, []).append((blob_id, ref))
        return packs

    def verify(
        self, packs: dict[str, int] | None = None, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Read back every pack (default: those the index names; `packs` maps ids to
        sizes) whole, check it against its name and header, and open every blob the
        index places in it. What is damaged is named by pack and by blob, so a caller
        can say which snapshots it affects."""
        indexed = self.blobs_by_pack()
        wanted = sorted(packs) if packs is not None else sorted(indexed)
        packs_damaged: dict[str, str] = {}
        blobs_damaged: dict[bytes, str] = {}
        counts = {"packs": 0, "blobs": 0, "bytes": 0}
        lock = threading.Lock()

        def check(pack: str) -> None:
            try:
                data = self.backend.get(pack_key(pack))
            except MissingObject as e:
                with lock:
                    packs_damaged[pack] = str(e)
                return
            try:
                read_header(self.keys, pack, data)
            except Corrupted as e:
                with lock:
                    packs_damaged[pack] = str(e)
            bad: dict[bytes, str] = {}
            blobs = indexed.get(pack, [])
            for blob_id, ref in blobs:
                try:
                    sealed = data[ref.offset : ref.offset + ref.length]
                    open_chunk(self.keys, blob_id, sealed, ref.raw_length, self._decompressor())
                except Corrupted as e:
                    bad[blob_id] = f"{e} (in pack {pack[:16]})"
            with lock:
                blobs_damaged.update(bad)
                counts["packs"] += 1
                counts["blobs"] += len(blobs)
                counts["bytes"] += len(data)
            if progress:
                progress(len(data))

        with ThreadPoolExecutor(self.workers, thread_name_prefix="vault") as pool:
            list(pool.map(check, wanted))
        problems = [*packs_damaged.values(), *blobs_damaged.values()]
        return {
            **counts,
            "packs_damaged": packs_damaged,
            "blobs_damaged": blobs_damaged,
            "problems": problems,
        }


class _Writer:
    """Seals new blobs into packs on the pool's threads; full packs are uploaded on a
    thread of their own, so the store's pipeline never stops for a write.

    Threads compress on their own and take one of `FILLING` packs only to seal a chunk
    into it (sealing runs at several GB/s, compressing at a fraction of that), so the
    number of pack buffers is `FILLING + UPLOADS_IN_FLIGHT` whatever the pool's size:
    with a buffer per thread, 16 workers held 18 packs of 20 MiB (349 MB added to a
    store's RSS). Buffers are kept and reused; the index is written only after every
    upload has finished (`drain`)."""

    def __init__(self, repo: Repository, stats: StoreStats) -> None:
        self.repo, self.stats = repo, stats
        self.new: set[bytes] = set()
        self.written: dict[str, list[list[Any]]] = {}
        self._lock = threading.Lock()
        self._turn = threading.Condition(self._lock)
        self._capacity = pack_capacity(repo.pack_bytes, repo.params.max_size)
        self._free: queue.SimpleQueue[PackWriter] = queue.SimpleQueue()
        self._unmade = FILLING + UPLOADS_IN_FLIGHT
        self._idle: list[PackWriter] = []  # being filled, no thread sealing into it
        self._filling = 0  # packs being filled, idle or in a thread's hands
        self._uploads: list[Future[None]] = []
        self.uploader = ThreadPoolExecutor(1, thread_name_prefix="vault-upload")

    def add(
        self, blob_id: bytes, chunk: bytes | memoryview, cctx: zstandard.ZstdCompressor
    ) -> None:
        """Seal the chunk into a pack unless the repository or this store has it (on a
        pool thread; the id is claimed first, so two threads never both store it)."""
        with self._lock:
            if blob_id in self.repo.index or blob_id in self.new:
                return
            self.new.add(blob_id)
        parts = encode(chunk, cctx)
        pack = self._take()
        try:
            size = pack.add_encoded(self.repo.keys, blob_id, parts, len(chunk))
        except BaseException:
            self._give_back(pack)
            raise
        with self._lock:
            self.stats.new_chunks += 1
            self.stats.new_bytes_stored += size
        if pack.size >= self.repo.pack_bytes:
            self._send(pack)
        else:
            self._give_back(pack)

    def _take(self) -> PackWriter:
        """A pack to seal into: an idle one, else a new one while fewer than FILLING are
        being filled (its buffer made when first needed, later one an upload returned),
        else wait for another thread to give one back."""
        self._raise_failed()
        with self._turn:
            while not self._idle and self._filling >= FILLING:
                self._turn.wait()
            if self._idle:
                return self._idle.pop()
            self._filling += 1
            make = self._free.empty() and self._unmade > 0
            self._unmade -= make
        return PackWriter(self._capacity) if make else self._free.get()

    def _give_back(self, pack: PackWriter) -> None:
        with self._turn:
            self._idle.append(pack)
            self._turn.notify()

    def _send(self, pack: PackWriter) -> None:
        with self._turn:
            self._filling -= 1
            self._uploads.append(self.uploader.submit(self._upload, pack))
            self._turn.notify()

    def _upload(self, pack: PackWriter) -> None:
        try:
            pack_id, data, entries = pack.finish(self.repo.keys)
            with data:
                self.repo.backend.put(pack_key(pack_id), data)
            vault_point("pack_put")
            with self._lock:
                self.written[pack_id] = entries
                self.stats.packs += 1
        finally:
            pack.reset()
            self._free.put(pack)

    def _raise_failed(self) -> None:
        with self._lock:
            done = [f for f in self._uploads if f.done()]
            self._uploads = [f for f in self._uploads if not f.done()]
        for future in done:
            future.result()

    def flush(self) -> None:
        """Send every pack still being filled (once the pool's work has all finished)."""
        with self._lock:
            packs, self._idle = self._idle, []
        for pack in packs:
            if len(pack):
                self._send(pack)
            else:
                with self._lock:
                    self._filling -= 1
                self._free.put(pack)

    def drain(self) -> None:
        """Wait for every upload; the first failure is raised."""
        try:
            for future in list(self._uploads):
                future.result()
        finally:
            self.uploader.shutdown(wait=True)

    def write_index(self) -> None:
        if not self.written:
            return
        self.repo._write_index(self.written)
        with self.repo._lock:
            self.repo.index_packs.update(self.written)
            for pack, entries in self.written.items():
                for blob_hex, offset, length, raw in entries:
                    ref = BlobRef(pack, int(offset), int(length), int(raw))
                    self.repo.index[bytes.fromhex(str(blob_hex))] = ref


def _config_body(config: dict[str, Any]) -> bytes:
    body = {k: config[k] for k in ("format", "id", "created", "chunker", "pack_bytes")}
    if "id_hash" in config:
        body["id_hash"] = config["id_hash"]
    return json.dumps(body, sort_keys=True).encode()


FETCH_INDEX_BYTES = 16 * 1024 * 1024
"""At most this much of sealed index files is read ahead while the key is derived."""


def _fetch_indexes(backend: Backend, derived: Future[bytes]) -> dict[str, bytes]:
    """Sealed index files, read while `derived` (the key derivation) runs: the smallest
    first, at most FETCH_INDEX_BYTES, and none once the key is there (the rest are read
    as before). A file gone or unreadable now is left to `load_index`, which reports it."""
    fetched: dict[str, bytes] = {}
    room = FETCH_INDEX_BYTES
    try:
        listed = sorted(backend.list("index/"), key=lambda item: item[1])
    except (OSError, VaultError):
        return fetched
    for key, size in listed:
        if derived.done() or size > room:
            break
        try:
            fetched[key.rsplit("/", 1)[1]] = backend.get(key)
        except (OSError, VaultError):
            continue
        room -= size
    return fetched


def read_config(backend: Backend) -> dict[str, Any]:
    try:
        raw = backend.get("config")
    except MissingObject:
        packs = sum(1 for _ in backend.list("data/"))
        if not packs and not backend.exists(CONFIG_COPY):
            raise NotARepository(f"{backend.describe()} holds no Dockyard repository") from None
        fix = (
            "run `dockyard-agent vault repair config` (it restores the config from its copy)"
            if backend.exists(CONFIG_COPY)
            else "its copy (keys/config) is gone too: restore the config from a backup"
        )
        raise ConfigMissing(
            f"{backend.describe()}: the config is missing, but the repository holds "
            f"{packs} pack(s): {fix}"
        ) from None
    try:
        config: dict[str, Any] = json.loads(raw)
    except ValueError:
        raise Corrupted("the repository's config") from None
    needed = ("format", "id", "created", "chunker", "pack_bytes", "slots", "mac")
    if not isinstance(config, dict) or any(k not in config for k in needed):
        raise Corrupted("the repository's config", "fields are missing")
    if int(config["format"]) > FORMAT:
        raise NewerFormat(
            f"this repository has format {config['format']}; this Dockyard reads up to "
            f"{FORMAT}: upgrade the agent"
        )
    return config


def _safe_join(target: Path, name: str) -> Path:
    """`target/name`, refusing names that climb out of `target`."""
    out = (target / name).resolve()
    root = target.resolve()
    if out != root and root not in out.parents:
        raise VaultError(f"refusing to restore {name!r} outside {target}")
    return out


def stream_source(name: str, data: BinaryIO) -> Source:
    """A source that reads an already open stream once (standard input, a pipe)."""
    return Source(name, lambda: nullcontext(data))
