"""Where a file's chunks sit when some of them are lost, for salvage and repair.

A snapshot names a file's chunks in order and, since chunk lengths are kept there too,
where each sits. Older snapshots name only the chunks: a length comes from the index (or
a pack's header). When a chunk's length is unknown too (its index entry and its pack
are both gone), the chunks after it can no longer be placed by counting forwards. They can
still be placed by counting back from the file's end, so a file with one such chunk keeps
every other byte; with several, the stretch from the first to the last unknown chunk is one
hole and everything before and after it is kept. Borg fills a damaged file's lost chunks
with zeros the same way; restic's repair drops such files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .errors import Corrupted


@dataclass(frozen=True)
class Piece:
    """`length` bytes at `offset` of a file: chunk `chunk`, or a hole (chunk None)."""

    offset: int
    length: int
    chunk: bytes | None


def place(
    chunks: list[bytes],
    size: int,
    length_of: Callable[[bytes], int | None],
    what: str,
    recorded: list[int] | None = None,
) -> list[Piece]:
    """The file's pieces in order, covering exactly `size` bytes. `recorded` are the
    lengths the snapshot keeps, if it does; otherwise `length_of` gives a chunk's
    plaintext length, or None when no index or pack knows it. Raises Corrupted when the
    known lengths alone do not fit the file's size."""
    if recorded is not None and len(recorded) == len(chunks) and sum(recorded) == size:
        return _forward(chunks, list(recorded), 0, len(chunks), 0)
    lengths = [length_of(c) for c in chunks]
    unknown = [i for i, n in enumerate(lengths) if n is None]
    if not unknown:
        known = [n for n in lengths if n is not None]
        if sum(known) != size:
            raise Corrupted(what, "its chunks' sizes differ from the snapshot")
        return _forward(chunks, lengths, 0, len(chunks), 0)
    first, last = unknown[0], unknown[-1]
    before = sum(n for n in lengths[:first] if n is not None)
    after = sum(n for n in lengths[last + 1 :] if n is not None)
    gap = size - before - after
    if gap < 0:
        raise Corrupted(what, "its chunks' sizes differ from the snapshot")
    pieces = _forward(chunks, lengths, 0, first, 0)
    if gap:
        pieces.append(Piece(before, gap, None))
    pieces.extend(_forward(chunks, lengths, last + 1, len(chunks), before + gap))
    return pieces


def _forward(
    chunks: list[bytes], lengths: list[int | None], start: int, stop: int, offset: int
) -> list[Piece]:
    out = []
    for i in range(start, stop):
        n = lengths[i]
        assert n is not None
        out.append(Piece(offset, n, chunks[i]))
        offset += n
    return out


def merged(holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(offset, length) ranges sorted, with touching or overlapping ones joined."""
    out: list[tuple[int, int]] = []
    for offset, length in sorted(holes):
        if out and offset <= out[-1][0] + out[-1][1]:
            start, n = out[-1]
            out[-1] = (start, max(start + n, offset + length) - start)
        elif length:
            out.append((offset, length))
    return out
