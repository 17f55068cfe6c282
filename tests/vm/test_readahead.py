"""The archive's read-ahead: the same bytes and hash as a plain read, failures raised where
the vault reads, memory bounded, and a consumer that gives up stops the thread."""

from __future__ import annotations

import hashlib
import io
import threading
from typing import Any

import pytest

from dockyard.agent.modules.vm.readahead import ReadAhead

from ..vault.conftest import vm_like


def test_bytes_and_hash_are_those_of_the_stream() -> None:
    data = vm_like(5_000_000, 7)
    with ReadAhead(io.BytesIO(data), piece=65536, depth=2) as ahead:
        out = io.BufferedReader(ahead, 1 << 20).read()
    assert out == data
    assert ahead.size == len(data)
    assert ahead.hash.hexdigest() == hashlib.sha256(data).hexdigest()


class _Breaks(io.RawIOBase):
    def __init__(self, after: int) -> None:
        self.after = after
        self.given = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.given >= self.after:
            raise ConnectionResetError("the peer reset the connection")
        n = min(len(buffer), self.after - self.given)
        buffer[:n] = b"x" * n
        self.given += n
        return n


def test_a_failure_mid_stream_is_raised_on_the_reading_side() -> None:
    def read_all(ahead: ReadAhead) -> None:
        while ahead.read(100_000):
            pass

    ahead = ReadAhead(_Breaks(300_000), piece=65536)  # type: ignore[arg-type]
    with ahead, pytest.raises(ConnectionResetError, match="reset"):
        read_all(ahead)


class _Endless(io.RawIOBase):
    """A source that never ends, counting what was taken from it."""

    def __init__(self) -> None:
        self.taken = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        view[:] = bytes(len(view))
        self.taken += len(view)
        return len(view)


def test_memory_is_bounded_and_giving_up_stops_the_thread() -> None:
    source = _Endless()
    with ReadAhead(source, piece=1 << 16, depth=4) as ahead:  # type: ignore[arg-type]
        assert ahead.read(10) == b"\0" * 10
        for _ in range(100):
            if source.taken >= 5 << 16:
                break
            threading.Event().wait(0.01)
        # Taken from the source: what was queued, what is held, and one piece in hand.
        assert source.taken <= (4 + 2) << 16
    assert not any(t.name == "vm-read-ahead" and t.is_alive() for t in threading.enumerate())
