"""What /graphql refuses before it runs an operation, where the parsing happens, and what
an unexpected error tells the client; the in-process app on PostgreSQL, and the real
server where the socket matters."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest

from dockyard.cloud.api import bodies
from dockyard.cloud.api.graphql import graphiql, limits
from dockyard.cloud.api.graphql.schema import Query
from dockyard.cloud.app import create_app
from dockyard.cloud.settings import Settings
from dockyard.cloud.store.db import Database

from ..factories import make_world
from ..procs import Cloud


@pytest.fixture
def app(pg_url: str, tmp_path: Path) -> Iterator[Any]:
    application = create_app(Settings(database_url=pg_url, data_dir=tmp_path, secret_key="k" * 40))
    yield application
    application.state.services.db.dispose()


def _post(app: Any, body: Any = None, token: str | None = None, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return await client.post("/graphql", json=body, headers=headers, **kw)

    return asyncio.run(go())


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def test_no_token_is_refused_from_the_headers_alone(cloud: Cloud) -> None:
    """A 50 MB body is declared and never sent: the 401 comes without the body read."""
    with socket.create_connection(("127.0.0.1", cloud.port), timeout=10) as s:
        s.sendall(
            b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 50000000\r\n\r\n{"
        )
        head = s.recv(4096).decode()
    assert head.startswith("HTTP/1.1 401"), head


def test_an_unauthenticated_request_logs_one_warning_line_and_no_traceback(
    app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    r = _post(app, token="dy_pat_nope", content=b"{not json")
    assert r.status_code == 401
    assert r.headers["x-request-id"]
    lines = [rec for rec in caplog.records if rec.name.startswith("dockyard")]
    assert [(rec.levelno, rec.getMessage()) for rec in lines] == [
        (logging.WARNING, "unauthenticated GraphQL request refused")
    ]
    assert lines[0].request_id == r.headers["x-request-id"]
    assert all(rec.exc_info is None for rec in caplog.records)


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (
            {"query": "{ me { id } }", "variables": {"x": "y" * limits.MAX_BODY_BYTES}},
            413,
            "limited",
        ),
        ({"query": "#" * (limits.MAX_QUERY_CHARS + 1) + "\n{ me { id } }"}, 413, "characters"),
        ({"query": "{ me { id } }", "variables": {"v": _nested(40)}}, 400, "nest"),
    ],
)
def test_bodies_and_queries_over_the_limits_are_refused_before_parsing(
    app: Any, pg: Database, body: Any, status: int, fragment: str
) -> None:
    token = make_world(pg).token
    r = _post(app, body, token)
    assert r.status_code == status, r.text
    assert fragment in r.json()["errors"][0]["message"]


def test_tokens_depth_aliases_and_field_count_are_limited(app: Any, pg: Database) -> None:
    token = make_world(pg).token
    cases = {
        "tokens": "{ me { " + "id " * (limits.MAX_TOKENS + 1) + "} }",
        "depth": "{ tenants { id " + "parent { " * 12 + "id" + " }" * 12 + " } }",
        "aliases": "{ " + " ".join(f"a{i}: me {{ id }}" for i in range(25)) + " }",
        "fields": "fragment F on Me { " + "id " * 300 + "} { me { ...F } b: me { ...F } }",
    }
    expected = {
        "tokens": "more than 2000 tokens",
        "depth": "exceeds maximum operation depth",
        "aliases": "aliases",
        "fields": f"at most {limits.MAX_FIELDS} fields",
    }
    for name, query in cases.items():
        r = _post(app, {"query": query}, token)
        messages = " ".join(e["message"] for e in r.json()["errors"])
        assert expected[name] in messages, (name, messages)


def _aliases(page: str, declared: str = "") -> str:
    """`MAX_ALIASES` aliases of one list, each asking for pages of `page`."""
    return (
        f"query{declared} {{ "
        + " ".join(
            f"a{i}: tenants(first: {page}) {{ ... on TenantConnection {{ edges {{ node {{ id }} }} }} }}"
            for i in range(limits.MAX_ALIASES)
        )
        + " }"
    )


PORTAL = """query($t: ID!) { me { id email name memberships { tenantId role via } }
  tenants(first: 50) { ... on TenantConnection {
    edges { node { id name kind flowMode plan parentId archivedAt } }
    pageInfo { hasNextPage endCursor } } }
  agents(tenantId: $t, first: 100) { ... on AgentConnection {
    edges { cursor node { id name } } pageInfo { hasNextPage endCursor } } } }"""


def test_list_sizes_weigh_an_operations_cost_and_a_costly_one_never_runs(
    app: Any, pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twenty aliases of a list are within the alias and field limits; asked with large
    pages, literal or through a variable, they are refused before any resolver runs."""
    world = make_world(pg)
    field = next(f for f in Query.__strawberry_definition__.fields if f.name == "tenants")
    real, calls = field.base_resolver.wrapped_func, []

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("first"))
        return await real(*args, **kwargs)

    monkeypatch.setattr(field.base_resolver, "wrapped_func", counted)
    for query, variables in (
        (_aliases("5000"), {}),
        (_aliases("$n", "($n: Int!)"), {"n": 500}),
        (_aliases("$n", "($n: Int! = 500)"), {}),
    ):
        body = _post(app, {"query": query, "variables": variables}, world.token).json()
        assert body["data"] is None, body
        assert f"costs at most {limits.MAX_COST}" in body["errors"][0]["message"], body
    assert calls == []
    # The same twenty lists with pages of five, and a portal's first screen, run.
    few = _post(app, {"query": _aliases("$n", "($n: Int!)"), "variables": {"n": 5}}, world.token)
    assert "errors" not in few.json(), few.text
    assert len(few.json()["data"]) == limits.MAX_ALIASES
    assert calls == [5] * limits.MAX_ALIASES
    portal = _post(app, {"query": PORTAL, "variables": {"t": str(world.tenant_id)}}, world.token)
    assert "errors" not in portal.json(), portal.text
    assert portal.json()["data"]["tenants"]["edges"]


def _worst_case_query() -> str:
    """The largest query the limits allow: 480 fields padded to `MAX_QUERY_CHARS`."""
    fields = "id " * 480
    padding = "#" * (limits.MAX_QUERY_CHARS - len(fields) - 40)
    query = f"{padding}\n{{ me {{ {fields}}} }}"
    assert len(query) <= limits.MAX_QUERY_CHARS
    return query


def _order_while_held(
    app: Any, monkeypatch: pytest.MonkeyPatch, token: str, body: Any, module: Any, name: str
) -> list[str]:
    """Holds `module.name` (a step of answering `body`) until /healthz has answered, and
    tells in which order the three finished. Ordering, not timing: run on the event loop,
    the held step would stop /healthz too, and the query would answer first."""
    started, release = threading.Event(), threading.Event()
    real = getattr(module, name)
    order: list[str] = []

    def held(*args: Any, **kwargs: Any) -> Any:
        started.set()
        release.wait(10)  # only a safety net: an on-loop step is what the test catches
        order.append("held")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, held)

    async def go() -> list[str]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

            async def graphql() -> None:
                r = await client.post(
                    "/graphql", json=body, headers={"Authorization": f"Bearer {token}"}
                )
                assert r.json()["data"]["me"]["id"], r.text
                order.append("graphql")

            task = asyncio.create_task(graphql())
            assert await anyio.to_thread.run_sync(started.wait, 10)
            assert (await client.get("/healthz")).status_code == 200
            order.append("healthz")
            release.set()
            await task
        return order

    return asyncio.run(go())


def test_a_worst_case_query_is_parsed_off_the_loop_healthz_answers_first(
    app: Any, pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = make_world(pg).token
    body = {"query": _worst_case_query()}
    order = _order_while_held(app, monkeypatch, token, body, limits, "parse")
    assert order == ["healthz", "held", "graphql"]


def test_a_signed_in_users_largest_body_is_decoded_off_the_loop_healthz_answers_first(
    app: Any, pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The JSON of a body just under the limit, from a signed-in user, is decoded on a
    worker thread like the query it carries."""
    token = make_world(pg).token
    query = _worst_case_query()
    filler = "y" * (limits.MAX_BODY_BYTES - len(query) - 100)
    body = {"query": query, "variables": {"unused": filler}}
    assert bodies.OFF_LOOP_BYTES < len(json.dumps(body)) <= limits.MAX_BODY_BYTES
    order = _order_while_held(app, monkeypatch, token, body, bodies, "decode")
    assert order == ["healthz", "held", "graphql"]


def test_introspection_is_for_signed_in_users_and_off_in_production(
    pg_url: str, pg: Database, tmp_path: Path
) -> None:
    token = make_world(pg).token
    query = {"query": "{ __schema { queryType { name } } }"}
    for environment, allowed in (("development", True), ("production", False)):
        app = create_app(
            Settings(
                database_url=pg_url,
                data_dir=tmp_path,
                secret_key="k" * 40,
                environment=environment,
            )
        )
        assert _post(app, query).status_code == 401
        body = _post(app, query, token).json()
        assert (body.get("data") or {}).get("__schema") is not None if allowed else body["errors"]
        app.state.services.db.dispose()


def test_an_unexpected_error_answers_a_request_id_and_logs_it_with_the_traceback(
    app: Any, pg: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    token = make_world(pg).token
    field = next(f for f in Query.__strawberry_definition__.fields if f.name == "tenants")

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("db password is hunter2")

    monkeypatch.setattr(field.base_resolver, "wrapped_func", broken)
    caplog.set_level(logging.INFO)
    r = _post(app, {"query": "{ tenants { __typename } }"}, token)
    request_id = r.headers["x-request-id"]
    assert "hunter2" not in r.text
    assert r.json()["errors"][0]["message"] == (
        f"an unexpected error; quote request id {request_id} to the operator"
    )
    logged = [rec for rec in caplog.records if rec.levelno == logging.ERROR]
    assert len(logged) == 1
    assert logged[0].request_id == request_id
    assert logged[0].exc_info is not None


def test_graphiql_is_served_from_the_cloud_with_no_outside_host(app: Any) -> None:
    async def go() -> dict[str, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            got = {"page": await client.get("/graphql", headers={"Accept": "text/html"})}
            for src in graphiql.PAGE.split('"'):
                if src.startswith(graphiql.PREFIX):
                    got[src] = await client.get(src)
            return got

    got = asyncio.run(go())
    page = got.pop("page")
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "http://" not in page.text
    assert "https://" not in page.text
    assert "//" not in page.text.replace("<!--", "")
    assert len(got) == 6
    for src, r in got.items():
        assert r.status_code == 200, src
    assert "url(http" not in got[f"{graphiql.PREFIX}/graphiql.min.css"].text
    start = got[f"{graphiql.PREFIX}/start.js"].text
    assert "sessionStorage" in start
    assert "http" not in start
