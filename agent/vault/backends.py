"""Where a repository's objects live. Objects are immutable and named by key paths
(`config`, `data/ab/abcd…`, `index/…`, `snapshots/…`, `pins/…`, `locks/…`).

A back end promises: `put` is atomic (a reader sees the whole object or none), `put_new`
creates only if absent (the lock protocol needs it), `get_range` reads part of an object,
and `list` walks a prefix. The local directory is the embedded default; S3 and the
cloud-brokered back end keep the same promise.
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from .directio import DIRECT_FROM, open_direct, pwrite_all, write_direct
from .errors import MissingObject, NoSpace, NotARepository, VaultError


class Backend(Protocol):
    def get(self, key: str) -> bytes: ...

    def get_range(self, key: str, offset: int, length: int) -> bytes: ...

    def put(self, key: str, data: bytes | memoryview) -> None: ...

    def put_new(self, key: str, data: bytes | memoryview) -> bool: ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str) -> Iterator[tuple[str, int]]: ...

    def exists(self, key: str) -> bool: ...

    def modified(self, key: str) -> float:
        """When the object was written (seconds since the epoch): prune's grace period
        for packs no index names is counted from it."""
        ...

    def describe(self) -> str: ...


def read_range_into(backend: Backend, key: str, offset: int, into: memoryview) -> int:
    """`get_range` into a caller's buffer: read in place from a local directory, copied
    from the answer for the others (their bytes come from the network anyway)."""
    if isinstance(backend, LocalBackend):
        return backend.read_into(key, offset, into)
    data = backend.get_range(key, offset, len(into))
    into[: len(data)] = data
    return len(data)


def _check_key(key: str) -> None:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise VaultError(f"not an object key: {key!r}")


class LocalBackend:
    """A directory. Writes go to `tmp/` first, are fsynced, then renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        _check_key(key)
        return self.root / key

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise MissingObject(key) from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                f.seek(offset)
                data = f.read(length)
        except FileNotFoundError:
            raise MissingObject(key) from None
        return data

    def read_into(self, key: str, offset: int, into: memoryview) -> int:
        """Part of an object read straight into a caller's buffer; the bytes read."""
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except FileNotFoundError:
            raise MissingObject(key) from None
        try:
            got = 0
            while got < len(into):
                n = os.preadv(fd, [into[got:]], offset + got)
                if n == 0:
                    break
                got += n
            return got
        finally:
            os.close(fd)

    def _write_tmp(self, data: bytes | memoryview) -> Path:
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp = tmp_dir / uuid.uuid4().hex
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                # A pack (from page-aligned memory) goes around the page cache: nothing
                # reads it back soon, and the copy cost more than the write.
                direct = open_direct(tmp) if len(data) >= DIRECT_FROM else None
                if direct is None:
                    pwrite_all(fd, data, 0)
                else:
                    try:
                        write_direct(direct, fd, memoryview(data), 0)  # falls back itself
                    finally:
                        os.close(direct)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace(f"no space left in {self.root}") from e
            raise
        return tmp

    def _sync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def put(self, key: str, data: bytes | memoryview) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._write_tmp(data)
        os.replace(tmp, path)
        self._sync_dir(path.parent)

    def put_new(self, key: str, data: bytes | memoryview) -> bool:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._write_tmp(data)
        try:
            os.link(tmp, path)  # fails if the name exists: create-if-absent, atomically
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        self._sync_dir(path.parent)
        return True

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def modified(self, key: str) -> float:
        try:
            return self._path(key).stat().st_mtime
        except FileNotFoundError:
            raise MissingObject(key) from None

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        base = self.root / prefix
        if not base.is_dir():
            return
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                path = Path(dirpath) / name
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    continue
                yield path.relative_to(self.root).as_posix(), size


class S3Backend:
    """A bucket (and prefix) the tenant owns, reached with credentials kept on the agent.

    boto3 is imported here only: an agent without S3 repositories never loads it.
    Create-if-absent is S3's conditional write (`If-None-Match: *`).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint = endpoint_url
        self.s3 = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region or "us-east-1",
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}),
        )

    def describe(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def _key(self, key: str) -> str:
        _check_key(key)
        return self.prefix + key

    def _missing(self, e: Exception) -> bool:
        code = getattr(e, "response", {}).get("Error", {}).get("Code", "")
        return code in ("NoSuchKey", "404", "NotFound")

    def get(self, key: str) -> bytes:
        try:
            body: bytes = self.s3.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.s3.exceptions.ClientError as e:
            if self._missing(e):
                raise MissingObject(key) from None
            raise
        return body

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            r = self.s3.get_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Range=f"bytes={offset}-{offset + length - 1}",
            )
        except self.s3.exceptions.ClientError as e:
            if self._missing(e):
                raise MissingObject(key) from None
            code = e.response.get("Error", {}).get("Code", "")
            if code == "InvalidRange":
                return b""
            raise
        data: bytes = r["Body"].read()
        return data

    def put(self, key: str, data: bytes | memoryview) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=bytes(data))

    def put_new(self, key: str, data: bytes | memoryview) -> bool:
        try:
            self.s3.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=bytes(data), IfNoneMatch="*"
            )
        except self.s3.exceptions.ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=self._key(key))

    def exists(self, key: str) -> bool:
        try:
            self.s3.head_object(Bucket=self.bucket, Key=self._key(key))
        except self.s3.exceptions.ClientError as e:
            if self._missing(e):
                return False
            raise
        return True

    def modified(self, key: str) -> float:
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=self._key(key))
        except self.s3.exceptions.ClientError as e:
            if self._missing(e):
                raise MissingObject(key) from None
            raise
        return float(head["LastModified"].timestamp())

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"][len(self.prefix) :], int(obj["Size"])


def open_backend(location: str) -> Backend:
    """A back end from a location: a directory, or s3://bucket/prefix (endpoint and keys
    from DOCKYARD_S3_ENDPOINT, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)."""
    if location.startswith("s3://"):
        bucket, _, prefix = location[5:].partition("/")
        if not bucket:
            raise VaultError("an S3 location is s3://bucket/prefix")
        return S3Backend(bucket, prefix, endpoint_url=os.environ.get("DOCKYARD_S3_ENDPOINT"))
    if "://" in location:
        raise VaultError(f"unknown repository location {location!r} (a directory or s3://...)")
    root = Path(location)
    if root.exists() and not root.is_dir():
        raise NotARepository(
            f"{location} is a file, not a repository (a repository is a directory)"
        )
    return LocalBackend(root)
