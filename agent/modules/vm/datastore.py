"""A vSphere datastore's files over HTTP: read a VM's files into the vault, write them back.

vCenter and ESXi serve every datastore at `/folder/<path>?dcPath=<datacenter>&dsName=<ds>`
(GET to read, PUT to write), authorised by the SOAP session's cookie, so an archive streams
a disk from the datastore into the vault with no copy on the agent's disk, and a restore
streams it back (`write_from`: the vault writes into a pipe that the upload reads). vcsim
serves the same URLs, over a temporary folder.

Reads go through the standard library's `http.client` rather than httpx: a disk's body is
gigabytes that arrive in TLS records of 16 KiB, and h11 parses each record in Python (about
twenty calls a record, holding the GIL the vault's compression threads need), where
`http.client` fills a whole MiB buffer in one C loop. Everything else (HEAD, PUT) stays on
httpx. The floor in `bench/vm_cycle.py` reads through the same reader.

Errors are the drivers' `DriverError`s with codes a job can report: `file_not_found`,
`datastore_full` (507, or the server's "no space"), `endpoint_unreachable`, `login_failed`.
"""

from __future__ import annotations

import http.client
import io
import os
import ssl
import threading
import urllib.parse
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


class DatastoreFiles:
    """The files of one vCenter's datastores, through the session of a connected `si`."""

    def __init__(
        self, si: Any, base_url: str, *, verify: bool | ssl.SSLContext = True, timeout: float = 60
    ) -> None:
        self.si = si
        self.base_url = base_url.rstrip("/")
        cookie = str(si._stub.cookie or "")
        name, _, value = cookie.split(";", 1)[0].partition("=")
        self._cookie = f"{name.strip()}={value.strip().strip(chr(34))}" if name else ""
        self._timeout = timeout
        self._tls = _tls_context(verify)
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
        _raise_for_status(response.status_code, where, doing)

    def _connection(self) -> http.client.HTTPConnection:
        url = urllib.parse.urlsplit(self.base_url)
        host, port = url.hostname or "", url.port
        if url.scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=self._timeout, context=self._tls)
        return http.client.HTTPConnection(host, port, timeout=self._timeout)

    @contextmanager
    def reader(self, where: DatastorePath, datacenter: str) -> Iterator[BinaryIO]:
        """The file's bytes as a stream, read as the consumer asks for them (on a
        connection of its own, closed when the stream is)."""
        url, params = self._url(where, datacenter)
        target = urllib.parse.urlsplit(url).path
        query = urllib.parse.urlencode(params)
        headers = {"Cookie": self._cookie} if self._cookie else {}
        connection = self._connection()
        try:
            try:
                connection.request("GET", f"{urllib.parse.quote(target)}?{query}", headers=headers)
                response = connection.getresponse()
            except (OSError, http.client.HTTPException) as e:
                raise Unreachable(f"reading {where}: {e}") from e
            if response.status >= 300:
                response.read(1 << 16)
            _raise_for_status(response.status, where, "read")
            yield io.BufferedReader(_Guarded(response, where), CHUNK)
        finally:
            connection.close()

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


def _raise_for_status(status: int, where: DatastorePath, doing: str) -> None:
    if status < 300:
        return
    if status == 404:
        raise DriverError("file_not_found", f"{where} does not exist")
    if status in (401, 403):
        raise LoginFailed(f"the vCenter session may not {doing} {where} ({status})")
    if status == 507:
        raise DriverError("datastore_full", f"datastore {where.datastore} is full")
    raise DriverError("datastore_error", f"{doing} {where}: the server answered {status}")


def _tls_context(verify: bool | ssl.SSLContext) -> ssl.SSLContext:
    """The context httpx would build for the same `verify`: the system's roots, or none."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _Guarded(io.RawIOBase):
    """A response body whose failures are the drivers' errors: a connection lost mid-body
    is `endpoint_unreachable`, a body shorter than its Content-Length too, never a silent
    end of file that would store a truncated disk."""

    def __init__(self, response: http.client.HTTPResponse, where: DatastorePath) -> None:
        self._response = response
        self._where = where
        length = response.getheader("content-length")
        self._left = int(length) if length and length.isdigit() else None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            n = self._response.readinto(buffer)
        except (OSError, http.client.HTTPException) as e:
            raise Unreachable(f"reading {self._where}: {e}") from e
        if self._left is not None:
            if n == 0 and self._left > 0 and len(memoryview(buffer)) > 0:
                raise Unreachable(
                    f"reading {self._where}: the connection ended {self._left} bytes early"
                )
            self._left -= n
        return n
