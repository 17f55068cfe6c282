"""Writes that go around the page cache where the file system allows it.

A buffered write copies every byte into the page cache, and the kernel must find (and, in
a VM whose free memory goes back to the host, fault in) a page for each: measured here on
ext4 in a VM, 800 MB written buffered and fsynced took 2.3-2.6 s and 1.9-2.3 s of system
CPU, the same bytes with O_DIRECT 0.7-1.1 s and 0.1-0.2 s (`dd`, 8 MiB blocks). The vault
writes large things it will not read back soon (restored files, new packs), so it writes
their whole blocks with O_DIRECT from page-aligned memory and only a partial last block
through the page cache. Where the file system refuses O_DIRECT (or the memory turns out
not to be aligned), everything goes through the page cache, as any write would.
"""

from __future__ import annotations

import errno
import mmap
import os
from pathlib import Path

ALIGN = max(mmap.PAGESIZE, 4096)
"""Direct writes start, end and sit in memory on this boundary."""
DIRECT_FROM = 1024 * 1024
"""Smaller objects are written through the page cache: a second open costs more than it saves."""


def pwrite_all(fd: int, data: bytes | memoryview | mmap.mmap, at: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, at)
        view, at = view[n:], at + n


def open_direct(path: Path) -> int | None:
    """A second descriptor of the file that writes around the page cache, or None where
    the platform or the file system has no O_DIRECT."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return None
    try:
        return os.open(path, os.O_WRONLY | flag)
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
            return None
        raise


def write_direct(direct_fd: int, fd: int, data: memoryview, at: int) -> bool:
    """`data` at `at` (a multiple of ALIGN): whole blocks through `direct_fd`, a partial
    last block through `fd`. False, with everything written through `fd`, if the direct
    write was refused (memory or an alignment this code does not know): the caller should
    stop trying."""
    whole = len(data) // ALIGN * ALIGN
    try:
        if whole:
            pwrite_all(direct_fd, data[:whole], at)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        pwrite_all(fd, data, at)
        return False
    if whole < len(data):
        pwrite_all(fd, data[whole:], at + whole)
    return True


def aligned_buffer(n: int) -> mmap.mmap:
    """Page-aligned memory of at least `n` bytes (anonymous mmap memory is)."""
    return mmap.mmap(-1, max(ALIGN, -(-n // ALIGN) * ALIGN))
