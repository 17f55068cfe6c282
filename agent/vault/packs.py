"""Packs: many sealed blobs in one object, with a sealed header at the end.

    [blob][blob]...[blob][sealed header][header length: u32 LE][b"DYPK1"]

Each blob is sealed on its own (so restore reads only the ranges it needs); the header
lists every blob's id, kind, offset, length and plaintext length, so the index can be
rebuilt from the packs alone. A pack is named by the SHA-256 of its bytes: a damaged pack
no longer matches its name, whoever looks.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass

import blake3
import zstandard

from .crypto import OVERHEAD, SEAL_SLACK, Keys
from .directio import aligned_buffer
from .errors import Corrupted

MAGIC = b"DYPK1"
TRAILER = struct.Struct("<I")
RAW, ZSTD = 0, 1
_RAW, _ZSTD = bytes([RAW]), bytes([ZSTD])
# A chunk whose zstd form saves less than 3% is stored as it is.
KEEP_RATIO = 0.97


@dataclass(frozen=True)
class BlobRef:
    """Where one blob lives."""

    pack: str
    offset: int
    length: int
    raw_length: int


def pack_key(pack_id: str) -> str:
    return f"data/{pack_id[:2]}/{pack_id}"


def blob_aad(blob_id: bytes) -> bytes:
    return b"dockyard-vault/v1/blob|" + blob_id


def open_chunk(
    keys: Keys, blob_id: bytes, sealed: bytes, raw_length: int, dctx: zstandard.ZstdDecompressor
) -> bytes:
    """The chunk's plaintext, checked against its id; Corrupted if anything is off."""
    what = f"chunk {blob_id.hex()[:16]}"
    body = keys.open(sealed, blob_aad(blob_id), what)
    return bytes(_checked(keys, blob_id, body, raw_length, dctx, what))


def open_chunk_into(
    keys: Keys,
    blob_id: bytes,
    sealed: memoryview,
    raw_length: int,
    dctx: zstandard.ZstdDecompressor,
    into: bytearray,
) -> bytes | memoryview:
    """`open_chunk` through a caller's buffer, reused from chunk to chunk: a stored chunk
    comes back as a view of `into`, valid until the buffer is used again."""
    what = f"chunk {blob_id.hex()[:16]}"
    body = keys.open_into(sealed, blob_aad(blob_id), into, what)
    return _checked(keys, blob_id, body, raw_length, dctx, what)


def open_chunk_at(
    keys: Keys,
    blob_id: bytes,
    sealed: memoryview,
    raw_length: int,
    dctx: zstandard.ZstdDecompressor,
    out: memoryview,
    at: int,
    body: bytearray,
) -> None:
    """`open_chunk` with the plaintext put in `out[at : at + raw_length]` and no copy on
    the way: a restore assembles its runs so. A chunk stored as it is (its sealed length
    says so: a compressed one is shorter) is decrypted in place, its kind byte landing in
    `out[at - 1]`, which is put back afterwards (so `at` is at least 1); a compressed one
    is decrypted into `body` and decompressed into place."""
    what = f"chunk {blob_id.hex()[:16]}"
    aad = blob_aad(blob_id)
    end = at + raw_length
    if len(sealed) == 1 + raw_length + OVERHEAD:
        saved = out[at - 1]
        kind = keys.open_into(sealed, aad, out[at - 1 : end], what)[0]
        if kind == RAW:
            out[at - 1] = saved
        else:  # never written so, but a compressed body of that length is still valid
            body[: 1 + raw_length] = out[at - 1 : end]
            out[at - 1] = saved
            _decompress_into(body, 1 + raw_length, dctx, out[at:end], what)
    else:
        opened = keys.open_into(sealed, aad, body, what)
        if not opened:
            raise Corrupted(what, "empty")
        if opened[0] == RAW:
            if len(opened) != 1 + raw_length:
                raise Corrupted(what, "content does not match its id")
            out[at:end] = opened[1:]
        else:
            _decompress_into(body, len(opened), dctx, out[at:end], what)
    if keys.chunk_id(out[at:end]) != blob_id:
        raise Corrupted(what, "content does not match its id")


def _decompress_into(
    body: bytearray, size: int, dctx: zstandard.ZstdDecompressor, out: memoryview, what: str
) -> None:
    """The zstd body `body[1:size]` decompressed to exactly fill `out`."""
    if body[0] != ZSTD:
        raise Corrupted(what, "unknown encoding")
    filled = 0
    try:
        with memoryview(body) as view, dctx.stream_reader(view[1:size]) as reader:
            while filled < len(out):
                got = reader.readinto(out[filled:])
                if not got:
                    break
                filled += got
    except zstandard.ZstdError as e:
        raise Corrupted(what, f"does not decompress: {e}") from None
    if filled != len(out):
        raise Corrupted(what, "content does not match its id")


def _checked(
    keys: Keys,
    blob_id: bytes,
    body: bytes | memoryview,
    raw_length: int,
    dctx: zstandard.ZstdDecompressor,
    what: str,
) -> bytes | memoryview:
    """The plaintext of an opened blob's body, decompressed and checked against its id."""
    data: bytes | memoryview
    if not body:
        raise Corrupted(what, "empty")
    if body[0] == ZSTD:
        try:
            data = dctx.decompress(body[1:], max_output_size=raw_length)
        except zstandard.ZstdError as e:
            raise Corrupted(what, f"does not decompress: {e}") from None
    elif body[0] == RAW:
        data = memoryview(body)[1:]
    else:
        raise Corrupted(what, "unknown encoding")
    if len(data) != raw_length or keys.chunk_id(data) != blob_id:
        raise Corrupted(what, "content does not match its id")
    return data


def encode(
    chunk: bytes | memoryview, cctx: zstandard.ZstdCompressor
) -> tuple[bytes, bytes | memoryview]:
    """A chunk's kind byte and body: zstd unless that saves too little."""
    packed = cctx.compress(chunk)
    return (_ZSTD, packed) if len(packed) < len(chunk) * KEEP_RATIO else (_RAW, chunk)


class PackWriter:
    """Builds one pack in a buffer of its own, kept from pack to pack.

    A store seals each chunk straight into the buffer (`add_chunk`), and the finished pack
    is a view of it: no per-chunk copies or allocations, and no join of the parts at the
    end. The view `finish` gives is valid until `reset`."""

    def __init__(self, capacity: int = 0) -> None:
        # Page-aligned, so a local directory can write the pack around the page cache.
        self.buf = aligned_buffer(capacity)
        self.entries: list[list[object]] = []
        self.size = 0

    def _room(self, n: int) -> None:
        if self.size + n > len(self.buf):
            grown = aligned_buffer(max(self.size + n, 2 * len(self.buf)))
            grown[: self.size] = self.buf[: self.size]
            self.buf = grown

    def add(self, blob_id: bytes, sealed: bytes | memoryview, raw_length: int) -> int:
        """Add a blob sealed elsewhere (prune copies live blobs this way); its offset."""
        offset = self.size
        self._append(sealed)
        self.entries.append([blob_id.hex(), offset, len(sealed), raw_length])
        return offset

    def add_chunk(
        self,
        keys: Keys,
        blob_id: bytes,
        chunk: bytes | memoryview,
        cctx: zstandard.ZstdCompressor,
    ) -> int:
        """Compress (unless it does not pay) and seal one chunk into the pack; the sealed
        blob's size is returned."""
        return self.add_encoded(keys, blob_id, encode(chunk, cctx), len(chunk))

    def add_encoded(
        self,
        keys: Keys,
        blob_id: bytes,
        parts: tuple[bytes, bytes | memoryview],
        raw_length: int,
    ) -> int:
        """Seal a chunk `encode` prepared into the pack (a store compresses outside the
        pack and holds it only while sealing); the sealed blob's size."""
        self._room(1 + len(parts[1]) + OVERHEAD + SEAL_SLACK)
        offset = self.size
        with memoryview(self.buf) as view:
            length = keys.seal_into(parts, blob_aad(blob_id), view[offset:])
        self.entries.append([blob_id.hex(), offset, length, raw_length])
        self.size += length
        return length

    def __len__(self) -> int:
        return len(self.entries)

    def finish(self, keys: Keys) -> tuple[str, memoryview, list[list[object]]]:
        """Seal the header after the blobs: the pack's name, its bytes and its entries."""
        header = keys.seal(json.dumps(self.entries).encode(), b"dockyard-vault/v1/pack-header")
        for part in (header, TRAILER.pack(len(header)), MAGIC):
            self._append(part)
        data = memoryview(self.buf)[: self.size]
        return pack_name(keys, data), data, self.entries

    def _append(self, part: bytes | memoryview) -> None:
        self._room(len(part))
        self.buf[self.size : self.size + len(part)] = part
        self.size += len(part)

    def reset(self) -> None:
        """Empty the pack for the next one (views from `finish` are overwritten)."""
        self.entries = []
        self.size = 0


def pack_name(keys: Keys, data: bytes | memoryview) -> str:
    """A pack is named by the hash of its bytes: BLAKE3 in format 2, SHA-256 in format 1."""
    if keys.id_hash == "blake3":
        return blake3.blake3(data, max_threads=1).hexdigest()
    return hashlib.sha256(data).hexdigest()


HeaderEntry = tuple[bytes, int, int, int]
"""A blob as a pack's header lists it: id, offset, sealed length, plaintext length."""


def read_header(keys: Keys, pack_id: str, data: bytes) -> list[HeaderEntry]:
    """A whole pack's header, after checking the pack against its name."""
    if pack_name(keys, data) != pack_id:
        raise Corrupted(f"pack {pack_id[:16]}", "its bytes do not match its name")
    return header_from_tail(keys, pack_id, data, len(data))


def header_length(pack_id: str, tail: bytes, size: int) -> int:
    """How many bytes at a pack's end hold its sealed header and trailer, read from the
    last bytes of the pack (`tail`, at least the trailer's) and its size."""
    what = f"pack {pack_id[:16]}"
    if len(tail) < len(MAGIC) + TRAILER.size or tail[-len(MAGIC) :] != MAGIC:
        raise Corrupted(what, "no pack trailer")
    (header_len,) = TRAILER.unpack_from(tail, len(tail) - len(MAGIC) - TRAILER.size)
    total = int(header_len) + TRAILER.size + len(MAGIC)
    if total > size:
        raise Corrupted(what, "header length out of range")
    return total


def header_from_tail(keys: Keys, pack_id: str, tail: bytes, size: int) -> list[HeaderEntry]:
    """A pack's header from its last bytes (at least `header_length` of them), without
    reading the blobs: the header is sealed, so it is trusted as far as its key is, and
    each blob is still checked against its id when it is read."""
    what = f"pack {pack_id[:16]}"
    total = header_length(pack_id, tail, size)
    if len(tail) < total:
        raise Corrupted(what, "the bytes given end before its header starts")
    end = len(tail) - len(MAGIC) - TRAILER.size
    sealed = tail[len(tail) - total : end]
    header = keys.open(sealed, b"dockyard-vault/v1/pack-header", what)
    try:
        entries = json.loads(header)
        found = [(bytes.fromhex(e[0]), int(e[1]), int(e[2]), int(e[3])) for e in entries]
    except (ValueError, TypeError, IndexError, KeyError) as e:
        raise Corrupted(what, f"header does not parse: {e}") from None
    body = size - total
    if any(off < 0 or length <= 0 or off + length > body for _, off, length, _ in found):
        raise Corrupted(what, "its header names bytes outside the pack")
    return found
