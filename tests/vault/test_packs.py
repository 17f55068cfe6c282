"""Blobs sealed into a pack and opened in place, as a restore assembles a run."""

from __future__ import annotations

import random

import pytest
import zstandard

from dockyard.agent.vault.crypto import Keys, new_master
from dockyard.agent.vault.errors import Corrupted
from dockyard.agent.vault.packs import PackWriter, open_chunk_at

RAW_CHUNK = random.Random(1).randbytes(300_000)  # incompressible: stored as it is
TEXT_CHUNK = b"".join(b"line %d of a log\n" % i for i in range(20_000))  # stored compressed


@pytest.mark.parametrize("chunk", [RAW_CHUNK, TEXT_CHUNK], ids=["raw", "zstd"])
def test_a_chunk_opens_into_place_and_leaves_its_neighbours_alone(chunk: bytes) -> None:
    keys = Keys(new_master())
    blob_id = keys.chunk_id(chunk)
    pack = PackWriter(1 << 20)
    sealed_size = pack.add_chunk(keys, blob_id, chunk, zstandard.ZstdCompressor(level=3))
    sealed = memoryview(pack.buf)[:sealed_size]
    assert (sealed_size < len(chunk)) is (chunk is TEXT_CHUNK)

    out = memoryview(bytearray(b"\xaa" * (len(chunk) + 20)))
    body = bytearray(len(chunk) + 1)
    dctx = zstandard.ZstdDecompressor()
    open_chunk_at(keys, blob_id, sealed, len(chunk), dctx, out, 10, body)
    assert bytes(out[10 : 10 + len(chunk)]) == chunk
    assert bytes(out[:10]) == b"\xaa" * 10, "the byte before the chunk was put back"
    assert bytes(out[10 + len(chunk) :]) == b"\xaa" * 10

    tampered = bytearray(sealed)
    tampered[len(tampered) // 2] ^= 1
    with pytest.raises(Corrupted, match="authentication failed"):
        open_chunk_at(keys, blob_id, memoryview(tampered), len(chunk), dctx, out, 10, body)
    with pytest.raises(Corrupted, match="does not match its id"):
        open_chunk_at(keys, blob_id, sealed, len(chunk) - 1, dctx, out, 10, body)
