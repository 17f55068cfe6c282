"""A restored file's bytes on their way to disk: around the page cache where it can be.

In a profiled 2 GB restore, buffered writes' copy into the page cache was 39% of all CPU
and threads queued on the file's lock for another 8% (see `directio`). So a run is
assembled in a page-aligned buffer of the writing thread and its whole blocks go straight
to the device; only the partial blocks at a run's two ends, shared with the neighbouring
runs, go through the page cache (they never share a block with a direct write, so the two
paths never see the same page).
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Callable
from pathlib import Path

from . import _cdc
from .directio import ALIGN, aligned_buffer, open_direct, pwrite_all, write_direct

RUN_PLAINTEXT_BYTES = 8 * 1024 * 1024
"""The most a restore assembles at once (unless a single chunk is larger)."""
SPARSE_BLOCK = 64 * 1024
"""Zeros are left as holes in aligned blocks of this size; shorter runs of zeros are written."""
_ZEROS = memoryview(bytes(8 * 1024 * 1024))


def zeros(n: int) -> memoryview | bytes:
    return _ZEROS[:n] if n <= len(_ZEROS) else bytes(n)


def data_extents(piece: bytes | memoryview | mmap.mmap, start: int = 0) -> list[tuple[int, int]]:
    """(start, end) of the parts of `piece[start:]` to write: all but its whole blocks of
    zeros, in blocks counted from `start` (the caller aligns it). Zeros often share a chunk
    with data (a run of zeros shorter than the largest chunk is cut with its neighbours),
    so whole-chunk checks alone would leave most of them written. The scan is C
    (`_cdc.extents`, without the GIL): in Python, each block that began with a zero was
    copied out under the GIL to be compared, 9% of a restore's GIL time on real images."""
    return _cdc.extents(piece, start, SPARSE_BLOCK)


class _Assembly(threading.local):
    """The page-aligned buffer a writing thread assembles its runs in, kept from run to
    run (anonymous mmap memory is page-aligned, as O_DIRECT needs)."""

    def __init__(self) -> None:
        self.buf: mmap.mmap | None = None

    def sized(self, n: int) -> mmap.mmap:
        if self.buf is None or len(self.buf) < n:
            if self.buf is not None:
                self.buf.close()
            self.buf = aligned_buffer(max(n, RUN_PLAINTEXT_BYTES + ALIGN))  # made once
        return self.buf


_assembly = _Assembly()


class RestoredFile:
    """One file being restored, written run by run from several threads at once.

    `direct` says whether whole blocks bypass the page cache. The file has its full
    length (as a hole) from the start, so runs can land in any order."""

    def __init__(self, path: Path, size: int, *, sparse: bool, direct: bool = True) -> None:
        self.sparse = sparse
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._direct_fd: int | None = None
        try:
            os.ftruncate(self.fd, size)
            if direct:
                self._direct_fd = open_direct(path)
        except BaseException:
            self.close()
            raise

    @property
    def direct(self) -> bool:
        return self._direct_fd is not None

    def close(self) -> None:
        if self._direct_fd is not None:
            os.close(self._direct_fd)
            self._direct_fd = None
        os.close(self.fd)

    def write_zeros(self, n: int, at: int) -> None:
        """A run of zeros: a hole already when sparse, written out otherwise."""
        if not self.sparse:
            while n:
                step = min(n, len(_ZEROS))
                pwrite_all(self.fd, zeros(step), at)
                at, n = at + step, n - step

    def write_run(self, fill: Callable[[memoryview, int], None], at: int, length: int) -> None:
        """`length` bytes at file offset `at`, which `fill(buf, i)` puts in `buf[i : i +
        length]` (with at least one byte of `buf` before `i` it may use for its own
        ends). The run is assembled in this thread's page-aligned buffer, so its whole
        blocks can be written from there around the page cache."""
        head = at % ALIGN  # the run sits this far into its first block
        lead = ALIGN  # a block of room before it, so `fill` has its byte before `i`
        buf = _assembly.sized(lead + head + length)
        with memoryview(buf) as view:
            fill(view, lead + head)
            data = view[lead : lead + head + length]  # data[0] is at file offset at - head
            base = at - head
            if self._direct_fd is None or length < ALIGN:
                self._write_buffered(data[head:], at)
                return
            lo = -(-head // ALIGN) * ALIGN  # the first whole block
            hi = (head + length) // ALIGN * ALIGN  # the end of the last whole block
            # The partial blocks at each end share a block with the neighbouring runs,
            # written through the page cache like theirs.
            if lo > head:
                pwrite_all(self.fd, data[head:lo], base + head)
            if head + length > hi:
                pwrite_all(self.fd, data[hi:], base + hi)
            spans = data_extents(data[:hi], lo) if self.sparse else [(lo, hi)]
            for a, b in spans:
                self._write_direct(data[a:b], base + a)

    def _write_direct(self, view: memoryview, at: int) -> None:
        fd = self._direct_fd
        if fd is None:
            pwrite_all(self.fd, view, at)
        elif not write_direct(fd, self.fd, view, at):
            self._direct_fd = None  # refused: the page cache takes every later write
            os.close(fd)

    def _write_buffered(self, data: memoryview, at: int) -> None:
        spans = data_extents(data) if self.sparse else [(0, len(data))]
        for a, b in spans:
            pwrite_all(self.fd, data[a:b], at + a)
