"""The vault on a real S3 (SeaweedFS, with signature checking on)."""

from __future__ import annotations

import io
import uuid

import pytest

from dockyard.agent.vault.backends import S3Backend
from dockyard.agent.vault.errors import Locked, MissingObject
from dockyard.agent.vault.locks import EXCLUSIVE, SHARED, Lock
from dockyard.agent.vault.maintenance import check, prune
from dockyard.agent.vault.repository import Repository, Source
from dockyard.agent.vault.retention import Retention

from ..peers.seaweed import ACCESS_KEY, SECRET_KEY
from .conftest import FAST, PASS, SMALL, vm_like


@pytest.fixture
def bucket(seaweed) -> S3Backend:
    name = f"t-{uuid.uuid4().hex[:12]}"
    seaweed.client().create_bucket(Bucket=name)
    return S3Backend(
        name,
        "vault/site-1",
        endpoint_url=seaweed.endpoint,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
    )


def test_store_prune_restore_on_s3(bucket: S3Backend) -> None:
    repo = Repository.init(bucket, PASS, params=SMALL, pack_bytes=512 * 1024, cost=FAST)
    data = [vm_like(1_200_000, 60 + i) for i in range(3)]
    snaps = [
        repo.store([Source("disk.img", lambda d=d: io.BytesIO(d), len(d))], name="vm")[0]
        for d in data
    ]
    assert all(
        k.startswith(("config", "keys/", "data/", "index/", "snapshots/"))
        for k, _ in bucket.list("")
    )
    prune(repo, Retention(keep_last=1))
    again = Repository.open(bucket, passphrase=PASS)
    assert [s.id for s in again.snapshots()] == [snaps[-1].id]
    out = io.BytesIO()
    again.restore_stream(snaps[-1].id, "disk.img", out)
    assert out.getvalue() == data[-1]
    assert check(again, read_data=True).ok
    assert again.verify()["problems"] == []


def test_conditional_writes_make_the_locks(bucket: S3Backend) -> None:
    assert bucket.put_new("locks/x", b"1")
    assert not bucket.put_new("locks/x", b"2"), "create-if-absent refuses an existing key"
    assert bucket.get("locks/x") == b"1"
    with pytest.raises(MissingObject):
        bucket.get("locks/none")
    bucket.delete("locks/x")
    shared = Lock(bucket, SHARED).acquire()
    with pytest.raises(Locked):
        Lock(bucket, EXCLUSIVE).acquire(timeout=0.3)
    shared.release()
    Lock(bucket, EXCLUSIVE).acquire().release()


def test_wrong_credentials_are_refused(seaweed, bucket: S3Backend) -> None:
    bad = S3Backend(
        bucket.bucket, "x", endpoint_url=seaweed.endpoint, access_key=ACCESS_KEY, secret_key="no"
    )
    with pytest.raises(Exception, match="SignatureDoesNotMatch|AccessDenied|403"):
        bad.put("config", b"{}")
