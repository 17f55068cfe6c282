"""Content-defined chunking of a stream, with a gear table derived from the repository key.

The scan is C (`_cdc.c`, FastCDC with normalised chunking); this module feeds it blocks and
keeps the undecided tail, so a file of any size is read once, a block at a time, and never
held whole. An insertion in the middle of a file moves only the chunks around it: cut
points depend on the last 64 bytes before them, not on offsets.

Sizes: 256 KiB minimum, 512 KiB target, 4 MiB maximum, chosen by `bench/vault_params.py`
on a VM-shaped image with 1% of it rewritten in clustered extents: a 512 KiB target stores
28% less than 1 MiB for that change (30 MB against 42 MB of 512 MB) for twice the chunks;
256 KiB would save a further third but doubles the index and the per-object costs again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

from . import _cdc
from .errors import VaultError

READ_BYTES = 8 * 1024 * 1024
WINDOWS = 3


@dataclass(frozen=True)
class ChunkerParams:
    min_size: int = 256 * 1024
    avg_size: int = 512 * 1024
    max_size: int = 4 * 1024 * 1024
    normalization: int = 2

    def __post_init__(self) -> None:
        if not 64 <= self.min_size < self.avg_size < self.max_size <= 64 * 1024 * 1024:
            raise VaultError("chunk sizes must satisfy 64 <= min < avg < max <= 64 MiB")
        if not 0 <= self.normalization <= 3:
            raise VaultError("normalised chunking level is 0 to 3")

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChunkerParams:
        return cls(**{k: int(v) for k, v in data.items()})


class Chunker:
    def __init__(self, gear: bytes, params: ChunkerParams, read_bytes: int = READ_BYTES) -> None:
        if len(gear) != 256 * 8:
            raise VaultError("a gear table has 256 eight-byte values")
        self.gear = gear
        self.params = params
        self.read_bytes = max(read_bytes, params.max_size)
        self._windows: list[bytearray] = []

    def cuts(self, data: bytes | bytearray | memoryview, final: bool) -> list[int]:
        p = self.params
        return _cdc.cuts(
            data, self.gear, p.min_size, p.avg_size, p.max_size, p.normalization, final
        )

    def chunks(self, stream: BinaryIO) -> Iterator[bytes]:
        """The chunks of `stream`, in order, each as its own bytes object (copied out of
        the window before the next is cut, so no settling is needed)."""
        for _, view in self.views(stream, lambda _through: None):
            yield bytes(view)

    def views(
        self, stream: BinaryIO, settle: Callable[[int], None], windows: int = WINDOWS
    ) -> Iterator[tuple[int, memoryview]]:
        """The chunks of `stream` as views into `windows` read buffers used in turn, each
        with the number of the window it lies in (0, 1, 2, ...).

        A store used to copy every byte three times on its one chunking thread (into a
        growing buffer, out as a slice, into bytes), each copy into fresh memory that the
        kernel had to fault in and zero: that thread set the pace of a store. Here a file
        is read straight into a window and handed on as views. Before window
        `n` overwrites a buffer, `settle(n - windows)` is called: the caller must be done
        with every view of that window and the ones before it when it returns. The
        undecided tail of a window (shorter than the maximum chunk) is carried into the
        next, so no chunk spans two windows.

        The buffers belong to the chunker and serve every call: a store of many small
        files allocates them once. A call may start only when the caller is done with
        every view of the one before."""
        if windows < 2:
            raise VaultError("the chunker needs at least two windows")
        readinto = getattr(stream, "readinto", None)
        carried = memoryview(b"")
        number = 0
        while True:
            if number >= windows:
                settle(number - windows)
            slot = number % windows
            if slot == len(self._windows):  # made when first needed: small files need one
                self._windows.append(bytearray(self.params.max_size + self.read_bytes))
            buf = self._windows[slot]
            view = memoryview(buf)
            filled = len(carried)
            view[:filled] = carried
            eof = False
            while filled < len(buf):
                if readinto is not None:
                    got = readinto(view[filled:])
                else:
                    block = stream.read(len(buf) - filled)
                    got = len(block)
                    view[filled : filled + got] = block
                if not got:
                    eof = True
                    break
                filled += got
            data = view[:filled]
            start = 0
            for end in self.cuts(data, final=eof):
                yield number, data[start:end]
                start = end
            if eof:
                if start != filled:  # cannot happen: the final scan takes everything
                    raise AssertionError("chunker left bytes after the end of input")
                return
            # The tail (at most the largest chunk, usually half a chunk) is copied into the
            # next window, which is another buffer.
            carried = data[start:]
            number += 1
