"""schemathesis against the generated agent OpenAPI document: no 5xx, and every response
fits the schema. The cloud here caps the poll wait at 1 s so the fuzzing stays quick."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from dockyard.agent import keys
from dockyard.agent import protocol as p
from dockyard.cloud.store.db import Database

from ..factories import enrolment_secret, make_world
from ..procs import Cloud


@pytest.fixture(scope="module")
def quick_cloud(pg_url: str, tmp_path_factory: pytest.TempPathFactory):
    server = Cloud(
        pg_url, tmp_path_factory.mktemp("fuzz"), env={"DOCKYARD_POLL_WAIT_CAP_S": "1"}
    ).start()
    yield server
    server.stop()


def test_openapi_document_is_generated_from_the_models(quick_cloud: Cloud) -> None:
    doc = httpx.get(f"{quick_cloud.url}/agent/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {
        "/enroll",
        "/token",
        "/poll",
        "/acks",
        "/jobs/{job_id}/events",
        "/metadata",
        "/key",
        "/storage/sign",
        "/storage/list",
    }
    schemas = doc["components"]["schemas"]
    assert schemas["EnrollRequest"]["additionalProperties"] is False
    assert (
        schemas["PollResponse"]["properties"]["entries"]["items"]["discriminator"]["propertyName"]
        == "kind"
    )


def test_schemathesis_finds_no_server_error(
    quick_cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    world = make_world(pg)
    key = keys.generate(tmp_path / "k.key")
    body = p.EnrollRequest(
        token=enrolment_secret(world), public_key=keys.public_b64(key), host=p.HostFacts()
    )
    headers = {p.VERSION_HEADER: p.PROTOCOL_VERSION}
    enrolled = httpx.post(
        f"{quick_cloud.url}/agent/v1/enroll", content=body.model_dump_json(), headers=headers
    ).json()
    token = httpx.post(
        f"{quick_cloud.url}/agent/v1/token",
        headers=headers,
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": p.ASSERTION_TYPE,
            "client_assertion": keys.assertion(key, enrolled["agent_id"], enrolled["token_url"]),
        },
    ).json()["access_token"]
    cli = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [
            str(cli),
            "run",
            f"{quick_cloud.url}/agent/v1/openapi.json",
            "--checks",
            "not_a_server_error,response_schema_conformance",
            "-H",
            f"Authorization: Bearer {token}",
            "--max-examples",
            "25",
            "--seed",
            "1125",
            "--request-timeout",
            "10",
            "--phases",
            "examples,coverage,fuzzing",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SCHEMATHESIS_HOOKS": ""},
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-6000:]
    assert "No issues found" in report or "passed" in report.lower(), report[-3000:]
