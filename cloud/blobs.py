"""Object storage for bytes the cloud keeps: a local directory in the embedded default,
S3 (boto3) in production. Keys are always under a tenant's prefix.

Agents never hold the storage's credentials: they get URLs signed object by object
(`presign`), valid for minutes, for one method on one key under their tenant's prefix.
S3 signs them itself; the local directory is served by the cloud at `/blobs/...?sig=` with
a JWT (HS256, joserfc, as the notice links) naming operation, tenant, key and expiry.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlencode

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]{0,511}$")
METHODS = {"get": "GET", "put": "PUT", "put_new": "PUT", "delete": "DELETE", "head": "HEAD"}


def check_key(key: str) -> str:
    if not _KEY.match(key) or any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"invalid blob key {key!r}")
    return key


class BadBlobURL(Exception):
    """A local blob URL that does not allow this request; `code` is the API's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Presigned:
    method: str
    url: str
    headers: dict[str, str]


class BlobStore(Protocol):
    def put(self, tenant_id: uuid.UUID, key: str, data: bytes) -> None: ...
    def get(self, tenant_id: uuid.UUID, key: str) -> bytes: ...
    def presign(self, tenant_id: uuid.UUID, op: str, key: str, expires_at: int) -> Presigned: ...
    def list(
        self, tenant_id: uuid.UUID, prefix: str, after: str, limit: int
    ) -> tuple[list[tuple[str, int]], bool]: ...


class LocalBlobs:
    """Blobs as files under `root/<tenant>/<key>`, written atomically (temp file, rename)."""

    def __init__(self, root: Path, public_url: str = "", secret: bytes = b"") -> None:
        self.root = root
        self.public_url = public_url.rstrip("/")
        self._key = OctKey.import_key(hashlib.sha256(b"dockyard-blob-urls|" + secret).digest())
        root.mkdir(parents=True, exist_ok=True)

    def path(self, tenant_id: uuid.UUID, key: str) -> Path:
        return self.root / str(tenant_id) / check_key(key)

    def put(self, tenant_id: uuid.UUID, key: str, data: bytes) -> None:
        self.write(self.path(tenant_id, key), data, False)

    @staticmethod
    def write(path: Path, data: bytes, only_new: bool) -> bool:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if only_new:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                tmp.unlink(missing_ok=True)
            return True
        os.replace(tmp, path)
        return True

    def get(self, tenant_id: uuid.UUID, key: str) -> bytes:
        return self.path(tenant_id, key).read_bytes()

    def signature(self, op: str, tenant: str, key: str, expires_at: int) -> str:
        """A JWT naming one operation on one object until `expires_at` (Unix seconds).

        A JWS via joserfc, the JOSE library the agent's tokens already use, rather than an
        HMAC over a string layout of our own: the claims travel inside the signed token, so
        what is checked is what was signed, with no canonical form to keep in step.
        """
        claims = {"op": op, "tenant": tenant, "key": key, "exp": expires_at}
        return jwt.encode({"alg": "HS256"}, claims, self._key, default_type=None)

    def check(self, tenant: str, key: str, token: str, now: float) -> str:
        """The operation a signed URL allows on `tenant`/`key` at `now`; or `BadBlobURL`."""
        try:
            claims = jwt.decode(token, self._key, algorithms=["HS256"]).claims
        except (JoseError, ValueError, TypeError):
            raise BadBlobURL("bad_signature", "the URL's signature does not match") from None
        op = claims.get("op")
        if claims.get("tenant") != tenant or claims.get("key") != key or op not in METHODS:
            raise BadBlobURL("bad_signature", "the URL's signature does not match")
        expires = claims.get("exp")
        if not isinstance(expires, int) or expires < now:
            raise BadBlobURL("expired", "the URL has expired; ask for a new one")
        return str(op)

    def presign(self, tenant_id: uuid.UUID, op: str, key: str, expires_at: int) -> Presigned:
        check_key(key)
        query = urlencode({"sig": self.signature(op, str(tenant_id), key, expires_at)})
        url = f"{self.public_url}/blobs/{tenant_id}/{quote(key)}?{query}"
        return Presigned(METHODS[op], url, {})

    def list(
        self, tenant_id: uuid.UUID, prefix: str, after: str, limit: int
    ) -> tuple[list[tuple[str, int]], bool]:
        base = self.root / str(tenant_id)
        found: list[tuple[str, int]] = []
        for key, size in self._walk(base):
            if key.startswith(prefix) and key > after:
                found.append((key, size))
        found.sort()
        return found[:limit], len(found) > limit

    @staticmethod
    def _walk(base: Path) -> Iterator[tuple[str, int]]:
        if not base.is_dir():
            return
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.startswith("."):
                    continue  # temporary files of writes in progress
                path = Path(dirpath) / name
                try:
                    yield path.relative_to(base).as_posix(), path.stat().st_size
                except FileNotFoundError:
                    continue


class S3Blobs:
    """A bucket the operator of the cloud owns; tenants' objects under `<prefix><tenant>/`."""

    def __init__(self, bucket: str, prefix: str = "", **client: Any) -> None:
        import boto3

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.s3 = boto3.client("s3", **client)

    def _key(self, tenant_id: uuid.UUID, key: str) -> str:
        return f"{self.prefix}{tenant_id}/{check_key(key)}"

    def put(self, tenant_id: uuid.UUID, key: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=self._key(tenant_id, key), Body=data)

    def get(self, tenant_id: uuid.UUID, key: str) -> bytes:
        obj = self.s3.get_object(Bucket=self.bucket, Key=self._key(tenant_id, key))
        data: bytes = obj["Body"].read()
        return data

    def presign(self, tenant_id: uuid.UUID, op: str, key: str, expires_at: int) -> Presigned:
        import time

        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(tenant_id, key)}
        headers: dict[str, str] = {}
        if op == "put_new":
            params["IfNoneMatch"] = "*"
            headers["If-None-Match"] = "*"
        client_method = {
            "get": "get_object",
            "put": "put_object",
            "put_new": "put_object",
            "delete": "delete_object",
            "head": "head_object",
        }[op]
        url = self.s3.generate_presigned_url(
            client_method, Params=params, ExpiresIn=max(1, expires_at - int(time.time()))
        )
        return Presigned(METHODS[op], url, headers)

    def list(
        self, tenant_id: uuid.UUID, prefix: str, after: str, limit: int
    ) -> tuple[list[tuple[str, int]], bool]:
        base = f"{self.prefix}{tenant_id}/"
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": base + prefix, "MaxKeys": limit}
        if after:
            args["StartAfter"] = base + after
        page = self.s3.list_objects_v2(**args)
        found = [(o["Key"][len(base) :], int(o["Size"])) for o in page.get("Contents", [])]
        return found, bool(page.get("IsTruncated"))
