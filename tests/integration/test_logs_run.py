"""A full run of a real cloud and a real agent with JSON logs asked for: every line either
writes parses as one JSON object with the shared fields, and none carries a token or secret
the run used (enrolment tokens, the API token, the agent's key, a vault passphrase, signed
URLs, notice links, access tokens)."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

from dockyard.agent import keys
from dockyard.agent import protocol as p
from dockyard.agent.link import Link
from dockyard.cloud.store.db import Database

from ..factories import Gql, make_world
from ..procs import SECRET, Agent, Cloud, eventually

ENROL = """mutation($s: ID!) { createEnrolmentToken(siteId: $s, maxFlow: DATA) {
  __typename ... on EnrolmentTokenCreated { secret } } }"""
ISSUE = """mutation($a: ID!) { issueCommand(agentId: $a, name: "noop.echo", args: {x: 1}) {
  __typename ... on Command { id } } }"""
STATE = """query($id: ID!) { command(id: $id) { __typename ... on Command { state } } }"""
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}")
BEARER = re.compile(r"Bearer (?!\*\*\*)\S+")


def pem_body(pem: bytes) -> list[str]:
    return [line for line in pem.decode().splitlines() if line and not line.startswith("-----")]


def parsed(text: str, where: str) -> list[dict[str, object]]:
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            fields = json.loads(line)
        except ValueError as e:
            raise AssertionError(f"{where} line {number} is not JSON: {line!r}") from e
        assert isinstance(fields, dict), (where, number, line)
        assert {"at", "level", "logger", "event"} <= fields.keys(), (where, number, line)
        lines.append(fields)
    return lines


def test_a_full_run_writes_json_lines_and_no_secret(
    pg_url: str, pg: Database, tmp_path: Path
) -> None:
    cloud = Cloud(
        pg_url,
        tmp_path / "cloud",
        env={"DOCKYARD_LOG_FORMAT": "json", "DOCKYARD_LOG_LEVEL": "debug"},
    ).start()
    json_env = {"DOCKYARD_AGENT_LOG_FORMAT": "json"}
    agent = Agent(tmp_path / "agent", env=json_env)
    cli_out: list[subprocess.CompletedProcess[str]] = []
    used: dict[str, str] = {"the cloud's secret key": SECRET}
    try:
        world = make_world(pg, flow=p.FlowMode.DATA)
        used["API token"] = world.token
        gql = Gql(cloud.url, world.token)
        created = gql.data(ENROL, s=str(world.site_id))["createEnrolmentToken"]
        used["enrolment token"] = created["secret"]

        cli_out.append(agent.dock(cloud.url, created["secret"], "--max-flow", "data"))
        key_file = next(agent.state.glob("*.key"))
        first_key = key_file.read_bytes()
        cli_out.append(agent.cli("rotate-key"))
        for n, line in enumerate(pem_body(first_key) + pem_body(key_file.read_bytes())):
            used[f"key material {n}"] = line
        agent_id = json.loads(agent.cli("status", "--json").stdout)["links"][0]["agent_id"]

        agent.start(options=("-v",))
        issued = gql.data(ISSUE, a=agent_id)["issueCommand"]
        eventually(
            lambda: gql.data(STATE, id=issued["id"])["command"]["state"] == "SUCCEEDED",
            what="the command to succeed",
        )

        # A signed storage URL and a notice link put their secret in the query string, which
        # uvicorn's access log writes whole.
        second = gql.data(ENROL, s=str(world.site_id))["createEnrolmentToken"]["secret"]
        used["second enrolment token"] = second
        link = Link(cloud.url)
        key = keys.generate(tmp_path / "probe.key")
        enrolled = link.enroll(
            p.EnrollRequest(
                token=second,
                public_key=keys.public_b64(key),
                host=p.HostFacts(hostname="probe"),
                max_flow=p.FlowMode.DATA,
            )
        )
        link.authenticate_as(str(enrolled.agent_id), key, enrolled.token_url)
        (signed,) = link.storage_sign([p.SignItem(op=p.StorageOp.PUT, key="logs/probe")]).urls
        assert link.transfer(signed, b"probe").status_code < 300
        used["storage signature"] = parse_qs(urlsplit(signed.url).query)["sig"][0]
        link.close()
        notice = secrets.token_urlsafe(24)
        used["notice link"] = notice
        httpx.get(f"{cloud.url}/vm/notices/answer", params={"t": notice})

        phrase = f"passphrase-{secrets.token_hex(8)}"
        used["vault passphrase"] = phrase
        (tmp_path / "pass").write_text(phrase)
        (tmp_path / "file.bin").write_bytes(b"dockyard" * 1000)
        vault = ("vault", "--repo", str(tmp_path / "repo"), "--passphrase-file")
        cli_out.append(agent.cli(*vault, str(tmp_path / "pass"), "init"))
        cli_out.append(
            agent.cli(*vault, str(tmp_path / "pass"), "store", str(tmp_path / "file.bin"))
        )
    finally:
        if agent.proc is not None:
            assert agent.stop() == 0
        cloud.stop()

    cloud_text, agent_text = cloud.log.read_text(), agent.log.read_text()
    cloud_lines = parsed(cloud_text, "cloud log")
    agent_lines = parsed(agent_text, "agent log")
    for n, result in enumerate(cli_out):
        parsed(result.stderr, f"agent command {n} stderr")
    assert any(f["logger"] == "uvicorn.access" for f in cloud_lines)
    assert any(f["logger"] == "dockyard.agent.cli" for f in agent_lines)
    assert any(str(f["logger"]).startswith("httpx") for f in agent_lines), "-v logs requests"
    assert any("sig=***" in str(f.get("path", "")) for f in cloud_lines), "the signed URL came"

    everything = "\n".join([cloud_text, agent_text] + [r.stdout + r.stderr for r in cli_out])
    for what, value in used.items():
        assert value not in everything, f"the {what} was logged"
    assert not JWT.search(everything), JWT.search(everything)
    assert not BEARER.search(everything), BEARER.search(everything)
