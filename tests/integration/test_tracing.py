"""Traces: with an OTLP endpoint set, the cloud sends a span per request with its SQL as
children; without one it sends nothing and loads none of OpenTelemetry.

The receiving end is a small OTLP/HTTP endpoint written here: no OpenTelemetry collector is
packaged by Debian or on PyPI (it is a Go binary from its own releases), so this one decodes
what the cloud sends with OpenTelemetry's own protobuf definitions, as a collector would,
and answers as the OTLP specification says (200, an empty ExportTraceServiceResponse).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import sqlalchemy
import wrapt
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from dockyard.cloud.app import create_app
from dockyard.cloud.settings import Settings
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.migrate import upgrade

from ..procs import SECRET


class _Receiver(ThreadingHTTPServer):
    spans: list[tuple[str, dict[str, str], str]]
    """(span name, attributes as text, service.name) of every span received."""


class _Handler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource.resource.attributes
                    if a.key == "service.name"
                ),
                "",
            )
            for scope in resource.scope_spans:
                for span in scope.spans:
                    attributes = {a.key: str(a.value).strip() for a in span.attributes}
                    self.server.spans.append((span.name, attributes, service))
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver(("127.0.0.1", 0), _Handler)
    server.spans = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _settings(tmp_path: Path, **more: object) -> Settings:
    path = tmp_path / "dockyard.db"
    db = Database(f"sqlite:///{path}")
    upgrade(db.engine)
    db.dispose()
    return Settings(database_url=f"sqlite:///{path}", secret_key=SECRET, data_dir=tmp_path, **more)


def test_a_request_and_its_sql_reach_the_otlp_endpoint(tmp_path: Path, receiver: _Receiver) -> None:
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}"
    app = create_app(_settings(tmp_path, otlp_endpoint=endpoint, otlp_service_name="dy-test"))

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://cloud") as client,
        ):
            # A GraphQL request with a token no one was given: the cloud looks it up.
            refused = await client.post(
                "/graphql",
                json={"query": "{ __typename }"},
                headers={"Authorization": "Bearer dy_api_" + "x" * 43},
            )
            assert refused.status_code == 401
            assert (await client.get("/livez")).status_code == 200
        # Leaving the lifespan shut the provider down, which sent what was batched.

    asyncio.run(scenario())
    names = [name for name, _, _ in receiver.spans]
    assert "POST /graphql" in names, names
    assert not any("livez" in n for n in names), "probes are not traced"
    sql = [a for n, a, _ in receiver.spans if "db.system" in a or "db.system.name" in a]
    assert sql, f"no SQL span among {names}"
    assert {service for _, _, service in receiver.spans} == {"dy-test"}
    # The app's stop took its instrumentation with it: the process's `create_engine` is
    # sqlalchemy's own again, so engines made later (another app, the next test) trace nothing.
    assert not isinstance(sqlalchemy.create_engine, wrapt.ObjectProxy)
    assert not SQLAlchemyInstrumentor().is_instrumented_by_opentelemetry


def test_without_an_endpoint_nothing_of_opentelemetry_is_loaded(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from dockyard.cloud.app import create_app\n"
        "from dockyard.cloud.settings import Settings\n"
        f"create_app(Settings(database_url='sqlite:///{tmp_path}/x.db', data_dir='{tmp_path}'))\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]", done.stdout
