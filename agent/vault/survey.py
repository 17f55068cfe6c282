"""What a repository holds, read so that one damaged object spoils only what depends on it.

check, prune and repair all start from a survey: the packs on the store, the index files
that open (and those that do not), the snapshots that open (and those that do not), and,
for every pack no readable index names, the blobs its own sealed header lists. A pack's
header is what makes a lost or damaged index harmless: the index is only a cache of the
headers, so a chunk a snapshot needs is lost only when neither holds it.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property

from .errors import Corrupted, MissingObject
from .packs import BlobRef, HeaderEntry, header_from_tail, header_length, pack_key
from .repository import Repository, Snapshot

TAIL_BYTES = 64 * 1024
"""Read from a pack's end to find its header; a longer header takes a second read."""


@dataclass
class Survey:
    packs: dict[str, int]
    """Every pack on the store, by id, with its size."""
    index: dict[bytes, BlobRef]
    indexed_packs: set[str]
    """Every pack a readable index file names."""
    index_files: set[str]
    damaged_indexes: dict[str, str]
    snapshots: list[Snapshot]
    damaged_snapshots: dict[str, str]
    headers: dict[str, list[HeaderEntry]] = field(default_factory=dict)
    """Packs whose headers were read (those no readable index names, or all of them)."""
    unreadable: dict[str, str] = field(default_factory=dict)
    """Packs whose header was read and would not open, with the problem."""

    @cached_property
    def by_pack(self) -> dict[str, list[tuple[bytes, BlobRef]]]:
        """The index turned around: each pack it names, with its blobs and their places."""
        packs: dict[str, list[tuple[bytes, BlobRef]]] = {}
        for blob, ref in self.index.items():
            packs.setdefault(ref.pack, []).append((blob, ref))
        return packs

    @cached_property
    def from_headers(self) -> dict[bytes, BlobRef]:
        """Where the headers read say each blob is (the first pack, by id, for a blob
        stored twice). Read once: a survey's headers do not change."""
        found: dict[bytes, BlobRef] = {}
        for pack in sorted(self.headers):
            for blob, offset, length, raw in self.headers[pack]:
                found.setdefault(blob, BlobRef(pack, offset, length, raw))
        return found

    def locate(self, chunks: Iterable[bytes]) -> tuple[dict[bytes, BlobRef], set[bytes]]:
        """Each chunk's place, and the chunks found nowhere: an index entry whose pack
        exists comes first, then a pack header."""
        headers = self.from_headers
        placed: dict[bytes, BlobRef] = {}
        lost: set[bytes] = set()
        for chunk in chunks:
            ref = self.index.get(chunk)
            if ref is None or ref.pack not in self.packs:
                ref = headers.get(chunk)
            if ref is None:
                lost.add(chunk)
            else:
                placed[chunk] = ref
        return placed, lost

    def damage(self, snapshots: list[Snapshot] | None = None) -> list[str]:
        """What makes data of these snapshots (default: all) unrecoverable, one line each,
        naming the object and what it affects; empty when everything they need is held
        by an index or a pack header."""
        lines = [
            f"snapshot {sid[:8]} is damaged ({problem}): what it names is unknown"
            for sid, problem in sorted(self.damaged_snapshots.items())
        ]
        return lines + self.lost_lines(self.snapshots if snapshots is None else snapshots)

    def lost_lines(self, chosen: list[Snapshot]) -> list[str]:
        """A line for each of these snapshots that names chunks found nowhere."""
        lines = []
        needed = {c for s in chosen for f in s.files for c in f.chunks}
        _, lost = self.locate(needed)
        for snap in chosen:
            files = [f.path for f in snap.files if any(c in lost for c in f.chunks)]
            if files:
                count = len({c for f in snap.files for c in f.chunks if c in lost})
                shown = ", ".join(files[:3]) + (" ..." if len(files) > 3 else "")
                lines.append(
                    f"snapshot {snap.id[:8]} ({snap.name or 'unnamed'}, {snap.time[:19]}) "
                    f"names {count} chunk(s) that no index or pack holds, in {shown}"
                )
        return lines


def take(repo: Repository, *, every_header: bool = False) -> Survey:
    """Survey the repository; `every_header` reads the header of every pack, not only of
    the packs no readable index names (a repair of the index needs them all)."""
    repo.load_index()
    snapshots = repo.snapshots()
    packs = {key.rsplit("/", 1)[1]: size for key, size in repo.backend.list("data/")}
    survey = Survey(
        packs,
        dict(repo.index),
        set(repo.index_packs),
        set(repo.index_files),
        dict(repo.damaged_indexes),
        snapshots,
        dict(repo.damaged_snapshots),
    )
    wanted = sorted(packs if every_header else set(packs) - survey.indexed_packs)
    with ThreadPoolExecutor(repo.workers, thread_name_prefix="vault-survey") as pool:
        for pack, result in zip(
            wanted, pool.map(lambda p: _header(repo, p, packs[p]), wanted), strict=True
        ):
            if isinstance(result, str):
                survey.unreadable[pack] = result
            else:
                survey.headers[pack] = result
    return survey


def _header(repo: Repository, pack: str, size: int) -> list[HeaderEntry] | str:
    """A pack's header from its tail (one or two ranged reads), or what is wrong."""
    key = pack_key(pack)
    try:
        tail = repo.backend.get_range(key, max(0, size - TAIL_BYTES), min(size, TAIL_BYTES))
        need = header_length(pack, tail, size)
        if need > len(tail):
            tail = repo.backend.get_range(key, size - need, need)
        return header_from_tail(repo.keys, pack, tail, size)
    except (Corrupted, MissingObject) as e:
        return str(e)


def users(snapshots: list[Snapshot], chunks: set[bytes]) -> dict[bytes, list[str]]:
    """For each of `chunks`, the "snapshot/path" places that name it."""
    found: dict[bytes, list[str]] = {}
    for snap in snapshots:
        for entry in snap.files:
            for chunk in set(entry.chunks) & chunks:
                found.setdefault(chunk, []).append(f"{snap.id[:8]}/{entry.path}")
    return found
