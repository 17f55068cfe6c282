"""The agent protocol over real HTTP (uvicorn on PostgreSQL): tokens and bad input."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jwt
from joserfc.jwk import OctKey, OKPKey

from dockyard.agent import keys
from dockyard.agent import protocol as p
from dockyard.cloud.store.db import Database

from ..factories import enrolment_secret, make_world
from ..procs import Cloud

H = {p.VERSION_HEADER: p.PROTOCOL_VERSION}


def okp(key: Ed25519PrivateKey) -> OKPKey:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return OKPKey.import_key(pem)


class Enrolled:
    def __init__(self, cloud: Cloud, pg: Database, tmp_path: Path, max_flow: str = "data") -> None:
        self.world = make_world(pg)
        self.key = keys.generate(tmp_path / f"{uuid.uuid4().hex}.key")
        body = p.EnrollRequest(
            token=enrolment_secret(self.world),
            public_key=keys.public_b64(self.key),
            host=p.HostFacts(hostname="t"),
            max_flow=p.FlowMode(max_flow),
            modules=[p.ModuleInfo(name="noop", version="1")],
        )
        r = httpx.post(f"{cloud.url}/agent/v1/enroll", content=body.model_dump_json(), headers=H)
        assert r.status_code == 201, r.text
        self.resp = p.EnrollResponse.model_validate_json(r.content)
        self.id = str(self.resp.agent_id)
        self.cloud = cloud

    def assertion(self, **overrides: object) -> str:
        now = int(time.time())
        claims = {
            "iss": self.id,
            "sub": self.id,
            "aud": self.resp.token_url,
            "iat": now,
            "exp": now + 120,
            "jti": uuid.uuid4().hex,
        } | overrides
        return jwt.encode({"alg": "EdDSA"}, claims, okp(self.key), algorithms=["EdDSA"])

    def token_response(self, assertion: str) -> httpx.Response:
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": p.ASSERTION_TYPE,
            "client_assertion": assertion,
        }
        return httpx.post(f"{self.cloud.url}/agent/v1/token", data=form, headers=H)

    def access(self) -> str:
        r = self.token_response(self.assertion())
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])


def test_token_url_comes_from_settings_not_the_host_header(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    agent = Enrolled(cloud, pg, tmp_path)
    assert agent.resp.token_url == f"{cloud.url}/agent/v1/token"
    r = httpx.post(
        f"{cloud.url}/agent/v1/token",
        headers=H | {"Host": "evil.example"},
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": p.ASSERTION_TYPE,
            "client_assertion": agent.assertion(aud="https://evil.example/agent/v1/token"),
        },
    )
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"exp": int(time.time()) + 3600}, "at most 5 minutes"),
        ({"exp": int(time.time()) - 600}, "expired"),
        ({"aud": "https://other/agent/v1/token"}, "aud"),
        ({"iss": "someone-else"}, ""),
    ],
    ids=["too-long", "expired", "wrong-audience", "iss-differs"],
)
def test_bad_assertions_are_refused(
    cloud: Cloud, pg: Database, tmp_path: Path, overrides: dict[str, object], why: str
) -> None:
    agent = Enrolled(cloud, pg, tmp_path)
    r = agent.token_response(agent.assertion(**overrides))
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "invalid_client"
    assert why in r.json()["error_description"]


def test_assertion_replay_and_wrong_key_and_wrong_algorithm(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    agent = Enrolled(cloud, pg, tmp_path)
    once = agent.assertion()
    assert agent.token_response(once).status_code == 200
    replay = agent.token_response(once)
    assert replay.status_code == 401
    assert "jti" in replay.json()["error_description"]
    stranger = Ed25519PrivateKey.generate()
    now = int(time.time())
    claims = {
        "iss": agent.id,
        "sub": agent.id,
        "aud": agent.resp.token_url,
        "exp": now + 60,
        "jti": "abcdefgh1",
    }
    forged = jwt.encode({"alg": "EdDSA"}, claims, okp(stranger), algorithms=["EdDSA"])
    assert agent.token_response(forged).status_code == 401
    hs = jwt.encode(
        {"alg": "HS256"},
        claims | {"jti": "abcdefgh2"},
        OctKey.import_key(b"k" * 32),
        algorithms=["HS256"],
    )
    r = agent.token_response(hs)
    assert r.status_code == 401
    assert "EdDSA" in r.json()["error_description"]


def test_protocol_version_header_is_required(cloud: Cloud) -> None:
    for headers in ({}, {p.VERSION_HEADER: "99"}):
        r = httpx.get(f"{cloud.url}/agent/v1/poll?after=0", headers=headers)
        assert r.status_code == 400
        assert r.json()["error"] == "unsupported_protocol_version"


def test_bad_input_gets_a_clear_4xx_and_changes_nothing(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    agent = Enrolled(cloud, pg, tmp_path)
    auth = H | {"Authorization": f"Bearer {agent.access()}", "Content-Type": "application/json"}
    url = f"{cloud.url}/agent/v1"
    r = httpx.post(f"{url}/acks", content=b"{not json", headers=auth)
    assert (r.status_code, r.json()["error"]) == (400, "malformed_json")
    r = httpx.post(f"{url}/acks", json={"acks": [{"seq": 1}], "extra": 1}, headers=auth)
    assert (r.status_code, r.json()["error"]) == (422, "invalid_request")
    assert "extra" in r.json()["message"]
    big = {
        "batch_id": str(uuid.uuid4()),
        "module": "noop",
        "kind": "x",
        "records": [{"v": "x" * 2_000_000}],
    }
    r = httpx.post(f"{url}/metadata", json=big, headers=auth)
    assert (r.status_code, r.json()["error"]) == (413, "body_too_large")
    r = httpx.get(f"{url}/poll?after=0", headers=H | {"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401
    r = httpx.get(f"{url}/poll?after=minus", headers=auth)
    assert r.status_code == 400
    r = httpx.post(f"{url}/acks", json={"acks": [{"seq": 999}]}, headers=auth)
    assert r.status_code == 404
    # another tenant's job id is "not found", exactly like a missing one
    other = Enrolled(cloud, pg, tmp_path)
    from dockyard.cloud.domain import commands

    from ..factories import system

    with system(pg, other.world.tenant_id) as ctx:
        foreign_job = commands.issue(ctx, uuid.UUID(other.id), "noop.echo", {}).job_id
    event = {"events": [{"kind": "failed", "at": "2026-01-01T00:00:00Z"}]}
    foreign = httpx.post(f"{url}/jobs/{foreign_job}/events", json=event, headers=auth)
    missing = httpx.post(f"{url}/jobs/{uuid.uuid4()}/events", json=event, headers=auth)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()
    # a used enrolment token is refused on replay
    body = p.EnrollRequest(
        token=enrolment_secret(agent.world),
        public_key=keys.public_b64(agent.key),
        host=p.HostFacts(),
    )
    assert httpx.post(f"{url}/enroll", content=body.model_dump_json(), headers=H).status_code == 201
    again = httpx.post(f"{url}/enroll", content=body.model_dump_json(), headers=H)
    assert again.status_code == 401


def test_config_mode_refusal_is_audited_and_stores_nothing(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    agent = Enrolled(cloud, pg, tmp_path, max_flow="config")
    auth = H | {"Authorization": f"Bearer {agent.access()}"}
    batch = {
        "batch_id": str(uuid.uuid4()),
        "module": "noop",
        "kind": "status",
        "records": [{"name": "vm1"}],
    }
    r = httpx.post(f"{cloud.url}/agent/v1/metadata", json=batch, headers=auth)
    assert r.status_code == 403
    assert r.json()["error"] == "flow_mode_forbids"
    from sqlalchemy import select

    from dockyard.cloud.store.models import AuditRecord, MetadataBatch

    from ..factories import system

    with system(pg, agent.world.tenant_id) as ctx:
        assert ctx.session.scalars(select(MetadataBatch)).all() == []
        refused = ctx.session.scalars(
            select(AuditRecord).where(AuditRecord.outcome == "refused")
        ).all()
        assert [(a.action, a.detail["count"]) for a in refused] == [("upload.metadata", 1)]


def test_metadata_taken_in_is_counted_by_kind_once_per_batch(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def figures() -> dict[tuple[str, str], float]:
        text = httpx.get(f"{cloud.url}/metrics").text
        return {
            (s.name, s.labels.get("kind", "")): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name.startswith("dockyard_metadata_") and s.labels.get("module") == "noop"
        }

    agent = Enrolled(cloud, pg, tmp_path)
    auth = H | {"Authorization": f"Bearer {agent.access()}"}
    kind = f"counted-{uuid.uuid4().hex[:8]}"  # a kind of this test's own: the cloud is shared
    batch = {"batch_id": str(uuid.uuid4()), "module": "noop", "kind": kind, "records": [{}, {}]}
    body = json.dumps(batch).encode()
    for _ in range(2):  # the second is the same batch again: stored once, counted once
        r = httpx.post(f"{cloud.url}/agent/v1/metadata", content=body, headers=auth)
        assert r.status_code == 200, r.text
    after = figures()
    assert after[("dockyard_metadata_bytes_total", kind)] == len(body)
    assert after[("dockyard_metadata_records_total", kind)] == 2
