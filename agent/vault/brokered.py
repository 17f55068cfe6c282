"""Storage the cloud manages, reached through URLs it signs object by object.

The agent holds no storage credentials: for each object it asks the cloud
(`POST /agent/v1/storage/sign`) and then talks to the storage directly. The cloud signs
only under the tenant's prefix and only while the tenant's flow mode is `data`; in any
other mode every call here fails with a clear error and nothing leaves the site.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime

from ..errors import LinkRefused
from ..link import Link
from ..protocol import SignedURL, SignItem, StorageOp
from .errors import MissingObject, NoSpace, VaultError

# A signed URL is reused until this long before it expires.
URL_MARGIN_S = 60.0


class BrokeredBackend:
    def __init__(self, link: Link, prefix: str) -> None:
        prefix = prefix.strip("/")
        if not prefix:
            raise VaultError("a repository in cloud storage needs a name (its key prefix)")
        self.link = link
        self.prefix = prefix + "/"
        self._urls: dict[tuple[StorageOp, str], SignedURL] = {}

    def describe(self) -> str:
        return f"cloud storage of {self.link.url}, {self.prefix}"

    def _signed(self, op: StorageOp, key: str) -> SignedURL:
        cached = self._urls.get((op, key))
        if cached is not None and cached.expires_at.timestamp() - URL_MARGIN_S > time.time():
            return cached
        try:
            signed = self.link.storage_sign([SignItem(op=op, key=self.prefix + key)]).urls[0]
        except LinkRefused as e:
            raise VaultError(f"the cloud refused storage access: {e.message}") from e
        if op in (StorageOp.GET, StorageOp.HEAD):
            self._urls[(op, key)] = signed
        return signed

    def get(self, key: str) -> bytes:
        r = self.link.transfer(self._signed(StorageOp.GET, key))
        if r.status_code == 404:
            raise MissingObject(key)
        self._check(r.status_code, key, (200,))
        return r.content

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        headers = {"Range": f"bytes={offset}-{offset + length - 1}"}
        r = self.link.transfer(self._signed(StorageOp.GET, key), headers=headers)
        if r.status_code == 404:
            raise MissingObject(key)
        self._check(r.status_code, key, (200, 206, 416))
        if r.status_code == 416:
            return b""
        return r.content if r.status_code == 206 else r.content[offset : offset + length]

    def put(self, key: str, data: bytes | memoryview) -> None:
        r = self.link.transfer(self._signed(StorageOp.PUT, key), content=bytes(data))
        self._check(r.status_code, key, (200, 201, 204))

    def put_new(self, key: str, data: bytes | memoryview) -> bool:
        r = self.link.transfer(self._signed(StorageOp.PUT_NEW, key), content=bytes(data))
        if r.status_code == 412:
            return False
        self._check(r.status_code, key, (200, 201, 204))
        return True

    def delete(self, key: str) -> None:
        r = self.link.transfer(self._signed(StorageOp.DELETE, key))
        self._check(r.status_code, key, (200, 204, 404))

    def exists(self, key: str) -> bool:
        r = self.link.transfer(self._signed(StorageOp.HEAD, key))
        if r.status_code == 404:
            return False
        self._check(r.status_code, key, (200,))
        return True

    def modified(self, key: str) -> float:
        """From the store's Last-Modified; an object whose age the store does not say
        counts as written now, so a grace period never cuts it short."""
        r = self.link.transfer(self._signed(StorageOp.HEAD, key))
        if r.status_code == 404:
            raise MissingObject(key)
        self._check(r.status_code, key, (200,))
        stamp = r.headers.get("last-modified")
        try:
            return parsedate_to_datetime(stamp).timestamp() if stamp else time.time()
        except (TypeError, ValueError):
            return time.time()

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        after = ""
        while True:
            try:
                page = self.link.storage_list(self.prefix + prefix, after)
            except LinkRefused as e:
                raise VaultError(f"the cloud refused storage access: {e.message}") from e
            for obj in page.objects:
                yield obj.key[len(self.prefix) :], obj.size
            if not page.truncated or not page.objects:
                return
            after = page.objects[-1].key

    @staticmethod
    def _check(status: int, key: str, good: tuple[int, ...]) -> None:
        if status in good:
            return
        if status in (507, 413):
            raise NoSpace(f"the cloud storage refused {key}: no space ({status})")
        raise VaultError(f"the cloud storage answered {status} for {key}")
