"""The vault on cloud-managed storage: the agent holds no storage credentials and gets each
object's URL signed by the cloud, under its tenant's prefix, only in flow mode `data`."""

from __future__ import annotations

import io
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from dockyard.agent import keys
from dockyard.agent import protocol as p
from dockyard.agent.link import Link
from dockyard.agent.vault.brokered import BrokeredBackend
from dockyard.agent.vault.errors import VaultError
from dockyard.agent.vault.maintenance import check
from dockyard.agent.vault.repository import Repository, Source
from dockyard.cloud.domain import tenants
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import AuditRecord

from ..factories import World, enrolment_secret, make_world, system
from ..procs import Cloud
from ..vault.conftest import FAST, PASS, SMALL, vm_like


def docked_link(
    cloud: Cloud, world: World, tmp_path: Path, max_flow: p.FlowMode = p.FlowMode.DATA
) -> Link:
    key = keys.generate(tmp_path / f"{uuid.uuid4().hex}.key")
    link = Link(cloud.url)
    enrolled = link.enroll(
        p.EnrollRequest(
            token=enrolment_secret(world),
            public_key=keys.public_b64(key),
            host=p.HostFacts(hostname="vault-test"),
            max_flow=max_flow,
        )
    )
    link.authenticate_as(str(enrolled.agent_id), key, enrolled.token_url)
    return link


def test_store_and_restore_through_signed_urls(cloud: Cloud, pg: Database, tmp_path: Path) -> None:
    world = make_world(pg, flow=p.FlowMode.DATA)
    link = docked_link(cloud, world, tmp_path)
    backend = BrokeredBackend(link, "vault/site-main")
    repo = Repository.init(backend, PASS, params=SMALL, pack_bytes=512 * 1024, cost=FAST)
    data = vm_like(1_500_000, 70)
    snap, stats = repo.store([Source("disk.img", lambda: io.BytesIO(data), len(data))])
    assert stats.packs >= 2

    again = Repository.open(BrokeredBackend(link, "vault/site-main"), passphrase=PASS)
    out = io.BytesIO()
    again.restore_stream(snap.id, "disk.img", out)
    assert out.getvalue() == data
    assert check(again, read_data=True).ok

    blobs = Path(cloud.env["DOCKYARD_DATA_DIR"]) / "blobs" / str(world.tenant_id) / "vault"
    assert (blobs / "site-main" / "config").is_file(), "objects live under the tenant's prefix"
    assert not (blobs / "site-main" / "config").read_bytes().count(PASS.encode())

    # A URL is good for its one object and method only.
    signed = link.storage_sign([p.SignItem(op=p.StorageOp.GET, key="vault/site-main/config")])
    url = signed.urls[0].url
    assert httpx.get(url).status_code == 200
    assert httpx.put(url, content=b"x").status_code == 405
    tampered = url.replace("vault/site-main/config", "vault/site-main/index")
    assert httpx.get(tampered).status_code == 403
    with system(pg, world.tenant_id) as ctx:
        signs = ctx.session.scalars(
            select(AuditRecord).where(AuditRecord.action == "storage.sign")
        ).all()
        assert signs, "signing is audited"
        assert all(a.outcome == "ok" for a in signs)
    link.close()


@pytest.mark.parametrize("mode", ["config", "metadata"])
def test_other_flow_modes_get_no_urls(
    cloud: Cloud, pg: Database, tmp_path: Path, mode: str
) -> None:
    world = make_world(pg, flow=p.FlowMode.DATA)
    link = docked_link(cloud, world, tmp_path)
    with system(pg, world.tenant_id) as ctx:
        tenants.set_flow_mode(ctx, world.tenant_id, p.FlowMode(mode))
    with pytest.raises(VaultError, match=f"flow mode {mode}"):
        Repository.init(BrokeredBackend(link, "vault/x"), PASS, cost=FAST)
    with system(pg, world.tenant_id) as ctx:
        refused = ctx.session.scalars(
            select(AuditRecord).where(AuditRecord.outcome == "refused")
        ).all()
        assert [a.action for a in refused] == ["upload.data"]
    blobs = Path(cloud.env["DOCKYARD_DATA_DIR"]) / "blobs" / str(world.tenant_id)
    assert not blobs.exists(), "nothing was stored"
    link.close()


def test_s3_signs_only_what_was_asked(seaweed) -> None:
    """The production blob store: S3 presigned URLs, create-if-absent, listing by prefix."""
    from dockyard.cloud.blobs import S3Blobs

    from ..peers.seaweed import ACCESS_KEY, SECRET_KEY

    bucket = f"cloud-{uuid.uuid4().hex[:10]}"
    seaweed.client().create_bucket(Bucket=bucket)
    store = S3Blobs(
        bucket,
        "tenants",
        endpoint_url=seaweed.endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    tenant = uuid.uuid4()
    expires = int(time.time()) + 300
    put = store.presign(tenant, "put_new", "vault/r/config", expires)
    assert httpx.put(put.url, content=b"one", headers=put.headers).status_code == 200
    again = httpx.put(put.url, content=b"two", headers=put.headers)
    assert again.status_code == 412, "create-if-absent"
    get = store.presign(tenant, "get", "vault/r/config", expires)
    assert httpx.get(get.url).content == b"one"
    assert httpx.get(get.url.replace("config", "other")).status_code == 403
    assert store.list(tenant, "vault/", "", 100) == ([("vault/r/config", 3)], False)
    assert store.list(uuid.uuid4(), "", "", 100) == ([], False), "another tenant sees nothing"
