"""Revocation on every replica at once, though access tokens are verified from a cache.

An agent's access token, once checked, is remembered by each replica until it expires
(`AgentTokens.verify`), and a quiet poll is held from the replica's memory without the
database (`holding.py`). Neither may outlive a revocation: revoking on replica A wakes
the agent's poll held on replica B over the bus (NOTIFY), B reads the database and
answers 401, and from then on the same token is refused on both replicas for polls and
acks, and no new token is issued."""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.jwk import OKPKey

from dockyard.agent import keys
from dockyard.agent import protocol as p
from dockyard.cloud.store.db import Database

from ..factories import Gql, enrolment_secret, make_world
from ..procs import Cloud, free_port

H = {p.VERSION_HEADER: p.PROTOCOL_VERSION}
REVOKE = """mutation($id: ID!) { revokeAgent(id: $id) { __typename ... on Agent { id } } }"""


@pytest.fixture
def two(pg_url: str, tmp_path: Path) -> Iterator[tuple[Cloud, Cloud]]:
    """Two replicas on one database, each with its own bus and token cache; the agent
    names the first one's token URL (the audience of its assertions)."""
    first = free_port()
    env = {"DOCKYARD_PUBLIC_URL": f"http://127.0.0.1:{first}"}
    a = Cloud(pg_url, tmp_path / "a", port=first, env=env).start()
    b = Cloud(pg_url, tmp_path / "b", env=env).start()
    try:
        yield a, b
    finally:
        b.stop()
        a.stop()


def _assertion(key: object, agent_id: str, token_url: str) -> str:
    pem = key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    now = int(time.time())
    claims = {"iss": agent_id, "sub": agent_id, "aud": token_url, "iat": now}
    claims |= {"exp": now + 120, "jti": uuid.uuid4().hex}
    return jwt.encode({"alg": "EdDSA"}, claims, OKPKey.import_key(pem), algorithms=["EdDSA"])


def _token(cloud: Cloud, key: object, agent_id: str, token_url: str) -> httpx.Response:
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": p.ASSERTION_TYPE,
        "client_assertion": _assertion(key, agent_id, token_url),
    }
    return httpx.post(f"{cloud.url}/agent/v1/token", data=form, headers=H)


def test_a_revocation_on_one_replica_refuses_the_cached_token_on_both(
    two: tuple[Cloud, Cloud], pg: Database, tmp_path: Path
) -> None:
    a, b = two
    world = make_world(pg)
    key = keys.generate(tmp_path / "agent.key")
    body = p.EnrollRequest(
        token=enrolment_secret(world),
        public_key=keys.public_b64(key),
        host=p.HostFacts(hostname="r"),
        modules=[p.ModuleInfo(name="noop", version="1")],
    )
    r = httpx.post(f"{a.url}/agent/v1/enroll", content=body.model_dump_json(), headers=H)
    assert r.status_code == 201, r.text
    enrolled = p.EnrollResponse.model_validate_json(r.content)
    agent_id = str(enrolled.agent_id)
    r = _token(a, key, agent_id, enrolled.token_url)
    assert r.status_code == 200, r.text
    auth = H | {"Authorization": f"Bearer {r.json()['access_token']}"}

    # Each replica verifies the token once (then from its cache) and remembers the
    # agent's quiet answer, so B's next poll is held from memory alone.
    for cloud in (a, b):
        first = httpx.get(f"{cloud.url}/agent/v1/poll?after=0&wait=0", headers=auth)
        assert first.status_code == 200, first.text
    quiet = p.PollResponse.model_validate_json(first.content)
    held_url = f"{b.url}/agent/v1/poll?after={quiet.last_seq}&wait=25&tag={quiet.tag}"

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        held = pool.submit(httpx.get, held_url, headers=auth, timeout=60)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if httpx.get(f"{b.url}/healthz").json()["held_polls"] >= 1:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the poll was never held on replica B")
        revoked = Gql(a.url, world.token).data(REVOKE, id=agent_id)["revokeAgent"]
        assert revoked["__typename"] == "Agent"
        answer = held.result()
    # Woken by A's NOTIFY, not lapsed: a lapsed hold answers 200 with the quiet answer.
    assert answer.status_code == 401, answer.text
    assert "revoked" in answer.json()["message"]

    acks = auth | {"Content-Type": "application/json"}
    for cloud in (a, b):
        poll = httpx.get(f"{cloud.url}/agent/v1/poll?after=0&wait=0", headers=auth)
        assert poll.status_code == 401, poll.text
        ack = httpx.post(
            f"{cloud.url}/agent/v1/acks", content=b'{"acks":[{"seq":1}]}', headers=acks
        )
        assert ack.status_code == 401, ack.text
    assert _token(b, key, agent_id, enrolled.token_url).status_code == 401
