"""Read a hypervisor's stream ahead on a thread of its own, hashing it there.

An archive reads a disk (TLS decryption), hashes it for the manifest (SHA-256) and gives it
to the vault (chunking, then compression and encryption on the vault's pool). Done in
turn on one thread, the first two wait for each other and for the chunker; both release
the GIL, so on a thread of their own they run beside the vault's work on another core.
The queue between holds at most `depth` pieces of `piece` bytes: memory stays bounded
however large the disk.
"""

from __future__ import annotations

import hashlib
import io
import queue
import threading
from types import TracebackType
from typing import Any, BinaryIO

PIECE = 1 << 20
DEPTH = 8


class _End:
    """What the reading thread puts last: the end of the stream, or its failure."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class ReadAhead(io.RawIOBase):
    """A stream read ahead and hashed on a thread; `hash` and `size` are final once the
    consumer has read to its end."""

    def __init__(self, inner: BinaryIO, piece: int = PIECE, depth: int = DEPTH) -> None:
        self._inner = inner
        self._piece = piece
        self._queue: queue.Queue[bytes | _End] = queue.Queue(depth)
        self._stop = threading.Event()
        self._hash = hashlib.sha256()
        self.size = 0
        self._left = memoryview(b"")
        self._ended: _End | None = None
        self._thread = threading.Thread(target=self._run, name="vm-read-ahead", daemon=True)
        self._thread.start()

    @property
    def hash(self) -> Any:
        """The SHA-256 of every byte read (the thread has finished once the end was read)."""
        self._thread.join()
        return self._hash

    def readable(self) -> bool:
        return True

    def _put(self, item: bytes | _End) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._inner.read(self._piece)
                if not data:
                    break
                self._hash.update(data)
                self.size += len(data)
                if not self._put(data):
                    return
        except BaseException as e:  # raised again on the consumer's thread
            self._put(_End(e))
            return
        self._put(_End())

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._left:
            if self._ended is not None:
                if self._ended.error is not None:
                    raise self._ended.error
                return 0
            item = self._queue.get()
            if isinstance(item, _End):
                self._ended = item
                continue
            self._left = memoryview(item)
        n = min(len(view), len(self._left))
        view[:n] = self._left[:n]
        self._left = self._left[n:]
        return n

    def close(self) -> None:
        """Stop the thread (a consumer that gave up early) without waiting on the stream."""
        self._stop.set()
        while True:  # unblock a put
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        super().close()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        self._thread.join(timeout=5)  # a stalled read ends when the stream closes
