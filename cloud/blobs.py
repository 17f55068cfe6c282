"""Object storage for bytes the cloud keeps: a local directory in the embedded default,
S3 (boto3) in production. Keys are always under a tenant's prefix."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Protocol

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]{0,511}$")


class BlobStore(Protocol):
    def put(self, tenant_id: uuid.UUID, key: str, data: bytes) -> None: ...
    def get(self, tenant_id: uuid.UUID, key: str) -> bytes: ...


class LocalBlobs:
    """Blobs as files under `root/<tenant>/<key>`, written atomically (temp file, rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, tenant_id: uuid.UUID, key: str) -> Path:
        if not _KEY.match(key) or ".." in key.split("/"):
            raise ValueError(f"invalid blob key {key!r}")
        return self.root / str(tenant_id) / key

    def put(self, tenant_id: uuid.UUID, key: str, data: bytes) -> None:
        path = self._path(tenant_id, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def get(self, tenant_id: uuid.UUID, key: str) -> bytes:
        return self._path(tenant_id, key).read_bytes()
