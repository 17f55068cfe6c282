"""The embedded default's signed blob URLs: a JWT naming one operation on one object."""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from dockyard.cloud.blobs import BadBlobURL, LocalBlobs

NOW = 1_800_000_000


def _sig(url: str) -> str:
    return parse_qs(urlsplit(url).query)["sig"][0]


def test_a_url_allows_its_one_operation_on_its_one_object_until_it_expires(tmp_path: Path) -> None:
    blobs = LocalBlobs(tmp_path, "http://cloud.test", b"secret")
    tenant = str(uuid.uuid4())
    sig = _sig(blobs.presign(uuid.UUID(tenant), "put_new", "vault/r/config", NOW + 600).url)
    assert sig.count(".") == 2, "a compact JWS"
    assert blobs.check(tenant, "vault/r/config", sig, NOW) == "put_new"
    assert blobs.check(tenant, "vault/r/config", sig, NOW + 600) == "put_new"

    def refused(code: str, tenant_: str, key: str, token: str, now: int = NOW) -> None:
        with pytest.raises(BadBlobURL) as e:
            blobs.check(tenant_, key, token, now)
        assert e.value.code == code

    refused("expired", tenant, "vault/r/config", sig, NOW + 601)
    refused("bad_signature", tenant, "vault/r/index", sig)
    refused("bad_signature", str(uuid.uuid4()), "vault/r/config", sig)
    head, body, mac = sig.split(".")
    refused("bad_signature", tenant, "vault/r/config", f"{head}.{body}.{mac[::-1]}")
    refused("bad_signature", tenant, "vault/r/config", "not a token")
    refused("bad_signature", tenant, "vault/r/config", "")
    other = LocalBlobs(tmp_path, "http://cloud.test", b"another secret")
    refused("bad_signature", tenant, "vault/r/config", other.signature("get", tenant, "k", NOW))
