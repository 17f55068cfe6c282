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

from .errors import MissingObject, NoSpace, VaultError


class Backend(Protocol):
    def get(self, key: str) -> bytes: ...

    def get_range(self, key: str, offset: int, length: int) -> bytes: ...

    def put(self, key: str, data: bytes) -> None: ...

    def put_new(self, key: str, data: bytes) -> bool: ...

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str) -> Iterator[tuple[str, int]]: ...

    def exists(self, key: str) -> bool: ...

    def describe(self) -> str: ...


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

    def _write_tmp(self, data: bytes) -> Path:
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp = tmp_dir / uuid.uuid4().hex
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
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

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._write_tmp(data)
        os.replace(tmp, path)
        self._sync_dir(path.parent)

    def put_new(self, key: str, data: bytes) -> bool:
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
