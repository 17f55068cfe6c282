"""A restored file written run by run, out of order, from several threads: every byte
lands where it belongs whether whole blocks go around the page cache or through it, and
zeros stay holes when asked."""

from __future__ import annotations

import itertools
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dockyard.agent.vault.directio import ALIGN, open_direct
from dockyard.agent.vault.outfile import SPARSE_BLOCK, RestoredFile, data_extents


def _image(rng: random.Random) -> bytes:
    """Data and zeros in stretches of every alignment, ending in a partial block."""
    parts = []
    for _ in range(40):
        n = rng.choice([1, 100, ALIGN - 1, ALIGN, ALIGN + 7, SPARSE_BLOCK * 3 + 5, 200_000])
        parts.append(bytes(n) if rng.random() < 0.4 else rng.randbytes(n))
    parts.append(bytes(SPARSE_BLOCK * 8))  # a stretch long enough to be a hole whatever lands
    parts.append(rng.randbytes(ALIGN // 3))
    return b"".join(parts)


def _runs(rng: random.Random, size: int) -> list[tuple[int, int]]:
    cuts = sorted({0, size, *(rng.randrange(size) for _ in range(60))})
    return list(itertools.pairwise(cuts))


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("sparse", [True, False])
def test_runs_in_any_order_rebuild_the_file(tmp_path: Path, direct: bool, sparse: bool) -> None:
    rng = random.Random(f"{direct}{sparse}")
    data = _image(rng)
    runs = _runs(rng, len(data))
    rng.shuffle(runs)
    path = tmp_path / "disk.img"
    file = RestoredFile(path, len(data), sparse=sparse, direct=direct)

    def put(span: tuple[int, int]) -> None:
        a, b = span
        if not any(data[a:b]):
            file.write_zeros(b - a, a)
            return

        def fill(out: memoryview, i: int) -> None:
            # Its own ends are the caller's to use (a chunk's kind byte lands before it).
            out[i - 1] = 0xFF
            out[i : i + b - a] = data[a:b]

        file.write_run(fill, a, b - a)

    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(put, runs))
        os.fsync(file.fd)
        assert file.direct is (direct and _supports_direct(tmp_path))
    finally:
        file.close()
    assert path.read_bytes() == data
    allocated = os.stat(path).st_blocks * 512
    if sparse:
        assert allocated <= len(data) - SPARSE_BLOCK * 7, "the long run of zeros is a hole"
    else:
        assert allocated >= len(data) // ALIGN * ALIGN


def _supports_direct(folder: Path) -> bool:
    probe = folder / "probe"
    probe.touch()
    fd = open_direct(probe)
    if fd is None:
        return False
    os.close(fd)
    return True


def test_data_extents_skip_exactly_the_whole_zero_blocks() -> None:
    """The C scan against the rule written out in Python: blocks counted from `start`,
    only whole blocks of zeros skipped, neighbouring data blocks joined into one span."""
    rng = random.Random(5)
    for _ in range(200):
        parts = []
        for _ in range(rng.randint(0, 12)):
            n = rng.choice([1, 7, SPARSE_BLOCK - 1, SPARSE_BLOCK, SPARSE_BLOCK * 2 + 3])
            parts.append(bytes(n) if rng.random() < 0.6 else rng.randbytes(n))
        piece = b"".join(parts)
        start = rng.choice([0, 0, 1, ALIGN, min(len(piece), 3 * ALIGN)])
        expected: list[tuple[int, int]] = []
        for i in range(start, len(piece), SPARSE_BLOCK):
            block = piece[i : i + SPARSE_BLOCK]
            if len(block) == SPARSE_BLOCK and not any(block):
                continue
            end = i + len(block)
            if expected and expected[-1][1] == i:
                expected[-1] = (expected[-1][0], end)
            else:
                expected.append((i, end))
        assert data_extents(memoryview(piece), start) == expected
        assert data_extents(bytearray(piece), start) == expected
