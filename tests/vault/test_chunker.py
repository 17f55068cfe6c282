"""The chunker: sizes within bounds, stable under insertion, keyed, streaming."""

from __future__ import annotations

import hashlib
import io
import os
import random

import pytest

from dockyard.agent.vault.chunker import Chunker, ChunkerParams
from dockyard.agent.vault.crypto import Keys, new_master
from dockyard.agent.vault.errors import VaultError

from .conftest import SMALL, vm_like


def test_chunks_rebuild_the_input_within_size_bounds() -> None:
    data = vm_like(4 * 1024 * 1024, 1)
    chunker = Chunker(Keys(new_master()).gear, SMALL, read_bytes=300_000)
    chunks = list(chunker.chunks(io.BytesIO(data)))
    assert b"".join(chunks) == data
    assert all(len(c) <= SMALL.max_size for c in chunks)
    assert all(len(c) >= SMALL.min_size for c in chunks[:-1])
    assert 20 < len(chunks) < 400


@pytest.mark.parametrize("key", range(20))
def test_an_insertion_moves_only_the_chunks_around_it(key: int) -> None:
    """Twenty fixed keys and fixed bytes, so a result can be run again. With a random key
    and random bytes about 1 combination in 35 shifts more than two chunks and 1 in 600 up
    to 8 (measured here): the minimum chunk size can skip the boundary where the chunking
    would have fallen back in step, and it takes a few chunks to find another."""
    data = vm_like(4 * 1024 * 1024, 2)
    changed = data[:2_000_003] + random.Random(7).randbytes(777) + data[2_000_003:]
    master = hashlib.sha512(f"chunker test key {key}".encode()).digest()
    chunker = Chunker(Keys(master).gear, SMALL)
    before = list(chunker.chunks(io.BytesIO(data)))
    after = list(chunker.chunks(io.BytesIO(changed)))
    new = set(after) - set(before)
    assert len(new) <= 3, f"{len(new)} of {len(after)} chunks changed"
    assert sum(map(len, new)) < 3 * SMALL.max_size


def test_boundaries_depend_on_the_key() -> None:
    data = os.urandom(2 * 1024 * 1024)
    a = [len(c) for c in Chunker(Keys(new_master()).gear, SMALL).chunks(io.BytesIO(data))]
    b = [len(c) for c in Chunker(Keys(new_master()).gear, SMALL).chunks(io.BytesIO(data))]
    assert a != b


def test_empty_and_tiny_inputs() -> None:
    chunker = Chunker(Keys(new_master()).gear, SMALL)
    assert list(chunker.chunks(io.BytesIO(b""))) == []
    assert list(chunker.chunks(io.BytesIO(b"x"))) == [b"x"]


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(VaultError):
        ChunkerParams(min_size=4096, avg_size=2048, max_size=8192)
    with pytest.raises(VaultError):
        Chunker(b"short", SMALL)


def test_views_stay_intact_until_their_window_is_settled() -> None:
    """A store hands the views to other threads and keeps no copy: every view must still
    hold its bytes when `settle` is asked for its window, and the views must cut exactly
    where `chunks` does, across windows and the tails carried between them."""
    data = vm_like(6 * 1024 * 1024, 3)
    chunker = Chunker(Keys(new_master()).gear, SMALL, read_bytes=SMALL.max_size + 1000)
    held: list[tuple[int, int, memoryview]] = []
    checked: list[bytes] = []

    def settle(through: int) -> None:
        while held and held[0][0] <= through:
            _, at, view = held.pop(0)
            assert bytes(view) == data[at : at + len(view)], f"view at {at} overwritten"
            checked.append(bytes(view))

    at = 0
    windows: set[int] = set()
    for number, view in chunker.views(io.BytesIO(data), settle):
        held.append((number, at, view))
        windows.add(number)
        at += len(view)
    settle(len(windows))
    assert len(windows) > 4, "the input spans several turns of the windows"
    assert b"".join(checked) == data
    assert checked == list(chunker.chunks(io.BytesIO(data)))


def _reference_cuts(data: bytes, gear: bytes, p: ChunkerParams) -> list[int]:
    """FastCDC byte by byte, as _cdc.c's comment states it, with nothing skipped."""
    table = [int.from_bytes(gear[i * 8 : i * 8 + 8], "little") for i in range(256)]
    bits = p.avg_size.bit_length() - 1
    top = lambda n: ((1 << n) - 1) << (64 - n)  # noqa: E731
    mask_s, mask_l = top(bits + p.normalization), top(bits - p.normalization)
    ends, pos = [], 0
    while pos < len(data):
        n = min(len(data) - pos, p.max_size)
        cut = n
        if n > p.min_size:
            h = 0
            for i in range(p.min_size, n):
                h = ((h << 1) + table[data[pos + i]]) & (2**64 - 1)
                if not h & (mask_s if i < p.avg_size else mask_l):
                    cut = i + 1
                    break
        pos += cut
        ends.append(pos)
    return ends


@pytest.mark.parametrize("zero_runs_cut", [False, True])
def test_zero_runs_are_skipped_without_moving_a_cut(zero_runs_cut: bool) -> None:
    """The scan jumps over zero runs once the gear hash sits at its fixed point over
    zeros; the cuts must be those of the byte-by-byte scan, both for a key whose fixed
    point passes no mask (the jump is taken) and for one whose fixed point cuts (it is
    not: every zero run then cuts at the minimum size)."""
    rnd = random.Random(11)
    params = ChunkerParams(min_size=64, avg_size=256, max_size=2048)
    gear = bytearray(Keys(new_master()).gear)
    # The fixed point is -gear[0]: its top bits zero pass every mask, its top bit set none.
    fixed_point = rnd.getrandbits(50) if zero_runs_cut else 2**63 + rnd.getrandbits(63)
    gear[:8] = ((-fixed_point) % 2**64).to_bytes(8, "little")
    parts = []
    for _ in range(120):
        kind = rnd.random()
        if kind < 0.4:
            parts.append(bytes(rnd.randint(0, 6000)))
        elif kind < 0.8:
            parts.append(rnd.randbytes(rnd.randint(0, 900)))
        else:
            parts.append(bytes([rnd.randint(1, 255)]) * rnd.randint(0, 700))
    data = b"".join(parts)
    chunker = Chunker(bytes(gear), params)
    assert chunker.cuts(data, final=True) == _reference_cuts(data, bytes(gear), params)
