"""A vSphere datastore's files over HTTP: read a VM's files into the vault, write them back.

vCenter and ESXi serve every datastore at `/folder/<path>?dcPath=<datacenter>&dsName=<ds>`
(GET to read, PUT to write), authorised by the SOAP session's cookie, so an archive streams
a disk from the datastore into the vault with no copy on the agent's disk, and a restore
streams it back (`write_from`: the vault writes into a pipe that the upload reads). vcsim
serves the same URLs, over a temporary folder.

Errors are the drivers' `DriverError`s with codes a job can report: `file_not_found`,
`datastore_full` (507, or the server's "no space"), `endpoint_unreachable`, `login_failed`.
"""

from __future__ import annotations

import io
import os
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

import httpx

from .drivers.base import DriverError, LoginFailed, Unreachable

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class DatastorePath:
    """`[datastore] folder/file` as vSphere writes it."""

    datastore: str
    path: str

    @classmethod
    def parse(cls, text: str) -> DatastorePath:
        if not text.startswith("[") or "] " not in text:
            raise DriverError("bad_path", f"{text!r} is not a datastore path ([datastore] path)")
        name, _, path = text[1:].partition("] ")
        if not name or not path or path.startswith("/") or ".." in path.split("/"):
            raise DriverError("bad_path", f"{text!r} is not a datastore path ([datastore] path)")
        return cls(name, path)

    def __str__(self) -> str:
        return f"[{self.datastore}] {self.path}"


class _Body(io.RawIOBase):
    """A response body as a readable stream, for the vault's chunker."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._left:
            try:
                self._left = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(view), len(self._left))
        view[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


class DatastoreFiles:
    """The files of one vCenter's datastores, through the session of a connected `si`."""

    def __init__(
        self, si: Any, base_url: str, *, verify: bool | ssl.SSLContext = True, timeout: float = 60
    ) -> None:
        self.si = si
        self.base_url = base_url.rstrip("/")
        cookie = str(si._stub.cookie or "")
        name, _, value = cookie.split(";", 1)[0].partition("=")
        self._client = httpx.Client(
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 30)),
            cookies={name.strip(): value.strip().strip('"')} if name else None,
        )

    def close(self) -> None:
        self._client.close()

    def _url(self, where: DatastorePath, datacenter: str) -> tuple[str, dict[str, str]]:
        return f"{self.base_url}/folder/{where.path}", {
            "dcPath": datacenter,
            "dsName": where.datastore,
        }

    def _raise_for(self, response: httpx.Response, where: DatastorePath, doing: str) -> None:
        status = response.status_code
        if status < 300:
            return
        if status == 404:
            raise DriverError("file_not_found", f"{where} does not exist")
        if status in (401, 403):
            raise LoginFailed(f"the vCenter session may not {doing} {where} ({status})")
        if status == 507:
            raise DriverError("datastore_full", f"datastore {where.datastore} is full")
        raise DriverError("datastore_error", f"{doing} {where}: the server answered {status}")

    @contextmanager
    def reader(self, where: DatastorePath, datacenter: str) -> Iterator[BinaryIO]:
        """The file's bytes as a stream, read as the consumer asks for them."""
        url, params = self._url(where, datacenter)
        try:
            with self._client.stream("GET", url, params=params) as response:
                self._raise_for(response, where, "read")
                yield io.BufferedReader(_Body(response.iter_raw(CHUNK)), CHUNK)
        except httpx.TransportError as e:
            raise Unreachable(f"reading {where}: {e}") from e

    def write(self, where: DatastorePath, datacenter: str, stream: BinaryIO, size: int) -> None:
        """Write `size` bytes from the stream to the file (replacing it), without holding
        more than one piece in memory."""

        def pieces() -> Iterator[bytes]:
            left = size
            while left > 0:
                piece = stream.read(min(CHUNK, left))
                if not piece:
                    raise DriverError("short_source", f"the source of {where} ended early")
                left -= len(piece)
                yield piece

        url, params = self._url(where, datacenter)
        headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
        try:
            response = self._client.put(url, params=params, content=pieces(), headers=headers)
        except httpx.TransportError as e:
            raise Unreachable(f"writing {where}: {e}") from e
        self._raise_for(response, where, "write")

    def write_from(
        self,
        where: DatastorePath,
        datacenter: str,
        size: int,
        produce: Callable[[BinaryIO], None],
    ) -> None:
        """Write what `produce` writes to its stream (a vault restore, say) to the file,
        through a pipe: the bytes go from the repository to the datastore without a copy on
        the agent's disk. The producer's failure is raised before the upload's."""
        read_fd, write_fd = os.pipe()
        failed: list[BaseException] = []

        def run() -> None:
            try:
                with open(write_fd, "wb", buffering=CHUNK) as out:
                    produce(out)
            except BrokenPipeError:
                pass  # the upload stopped reading; its error is the one to report
            except BaseException as e:  # re-raised on the caller's thread
                failed.append(e)

        producer = threading.Thread(target=run, name="datastore-write", daemon=True)
        with open(read_fd, "rb", buffering=CHUNK) as source:
            producer.start()
            try:
                self.write(where, datacenter, source, size)
            except DriverError:
                source.close()  # unblocks the producer
                producer.join()
                if failed:
                    raise failed[0] from None
                raise
        producer.join()
        if failed:
            raise failed[0]

    def size(self, where: DatastorePath, datacenter: str) -> int:
        url, params = self._url(where, datacenter)
        try:
            response = self._client.head(url, params=params)
        except httpx.TransportError as e:
            raise Unreachable(f"reading {where}: {e}") from e
        self._raise_for(response, where, "read")
        return int(response.headers.get("content-length", "0"))
