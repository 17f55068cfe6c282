"""A property (hypothesis): nested, huge, malformed and oddly encoded bodies sent to every
route that reads one, with and without credentials, get no 5xx and change nothing. The app
runs in process on PostgreSQL; the credentials are real (an enrolled agent's access token,
a user's API token, a correctly signed blob URL)."""

from __future__ import annotations

import asyncio
import codecs
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect, text

from dockyard.agent import keys
from dockyard.agent import protocol as p
from dockyard.cloud.api.agent.spec import OPERATIONS
from dockyard.cloud.app import create_app
from dockyard.cloud.blobs import LocalBlobs
from dockyard.cloud.modules.vm import notices as vm_notices
from dockyard.cloud.settings import Settings
from dockyard.cloud.store.db import Database

from ..factories import enrolment_secret, make_world

V = {p.VERSION_HEADER: p.PROTOCOL_VERSION}


def _nested(depth: int, open_: str) -> bytes:
    if open_ == "[":
        return b"[" * depth + b"1" + b"]" * depth
    return b'{"k":' * depth + b"1" + b"}" * depth


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda kids: (
        st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=10), kids, max_size=5)
    ),
    max_leaves=30,
)

BODIES = st.one_of(
    st.integers(30, 20_000).flatmap(lambda d: st.sampled_from([_nested(d, "["), _nested(d, "{")])),
    st.integers(1, 3).map(lambda m: b"[" * (m * 400_000)),
    st.binary(max_size=2000),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.tuples(json_values, st.sampled_from(["utf-16", "utf-32", "utf-8-sig", "latin-1"])).map(
        lambda t: json.dumps(t[0], ensure_ascii=False).encode(t[1], "replace")
    ),
    st.sampled_from(
        [
            b'{"a": NaN}',
            b'{"a": 1e999}',
            b'{"a": "\\ud800"}',
            b'{"seq": 100000000000000000000000000}',
            b'{"acks": [{"seq": 99999999999999999999}]}',
            codecs.BOM_UTF8 + b"{}",
            b"{}",
            b"[]",
            b'{"query": "{ me { id } }", "variables": []}',
        ]
    ),
)


@pytest.fixture(scope="module")
def world(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data = tmp_path_factory.mktemp("bodies")
    app = create_app(Settings(database_url=pg_url, data_dir=data, secret_key="b" * 40))
    db: Database = app.state.services.db
    w = make_world(db)
    key = keys.generate(data / "agent.key")
    _enrolled, token = asyncio.run(_enrol(app, w, key))
    blobs = app.state.services.blobs
    assert isinstance(blobs, LocalBlobs)
    signed = blobs.presign(w.tenant_id, "put_new", "k/one", int(time.time()) + 3600)
    yield {
        "app": app,
        "db": db,
        "agent_token": token,
        "user_token": w.token,
        "job": str(uuid.uuid4()),
        "blob_url": signed.url.removeprefix(app.state.services.settings.public_url),
    }
    db.dispose()


async def _enrol(app: Any, w: Any, key: Any) -> tuple[dict[str, Any], str]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8080"
    ) as client:
        body = p.EnrollRequest(
            token=enrolment_secret(w), public_key=keys.public_b64(key), host=p.HostFacts()
        )
        enrolled = (
            await client.post("/agent/v1/enroll", content=body.model_dump_json(), headers=V)
        ).json()
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": p.ASSERTION_TYPE,
            "client_assertion": keys.assertion(key, enrolled["agent_id"], enrolled["token_url"]),
        }
        token = (await client.post("/agent/v1/token", data=form, headers=V)).json()
        return enrolled, token["access_token"]


def _routes(w: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(method, path, which token) for every route that reads a body."""
    agent = [
        f"/agent/v1{op.path.replace('{job_id}', w['job'])}"
        for op in OPERATIONS
        if op.method == "POST"
    ]
    return [
        *(("POST", path, "agent") for path in agent),
        ("POST", "/graphql", "user"),
        ("POST", vm_notices.ANSWER_PATH, "none"),
        ("PUT", w["blob_url"], "none"),
    ]


def _counts(db: Database) -> dict[str, int]:
    with db.engine.connect() as conn:
        tables = [t for t in inspect(conn).get_table_names() if t != "alembic_version"]
        counts = {t: conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar_one() for t in tables}
        counts["audit_log"] = conn.execute(
            text("SELECT count(*) FROM audit_log WHERE outcome <> 'refused'")
        ).scalar_one()
    return counts


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=BODIES,
    signed_in=st.booleans(),
    content_type=st.sampled_from(
        ["application/json", "application/x-www-form-urlencoded", "text/plain", ""]
    ),
)
def test_no_body_gets_a_5xx_or_changes_anything(
    world: dict[str, Any], body: bytes, signed_in: bool, content_type: str
) -> None:
    before = _counts(world["db"])

    async def send_all() -> list[tuple[str, int]]:
        answers = []
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=world["app"]), base_url="http://127.0.0.1:8080"
        ) as client:
            for method, path, who in _routes(world):
                headers = dict(V)
                if content_type:
                    headers["Content-Type"] = content_type
                if signed_in and who != "none":
                    headers["Authorization"] = f"Bearer {world[who + '_token']}"
                r = await client.request(method, path, content=body, headers=headers)
                answers.append((path, r.status_code))
        return answers

    answers = asyncio.run(send_all())
    assert [a for a in answers if a[1] >= 500] == []
    assert _counts(world["db"]) == before


def test_the_property_reaches_every_body_route(world: dict[str, Any], tmp_path: Path) -> None:
    paths = {path for _, path, _ in _routes(world)}
    assert len(paths) == 11
    assert {"/graphql", vm_notices.ANSWER_PATH} <= paths
