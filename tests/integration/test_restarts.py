"""The cloud restarts: held polls are released at once, and an agent rides it out."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import httpx

from dockyard.agent import keys
from dockyard.agent import protocol as p
from dockyard.cloud.domain import commands
from dockyard.cloud.store.db import Database

from ..factories import Gql, enrolment_secret, make_world, system
from ..procs import Agent, Cloud, eventually


def test_agent_rides_out_a_cloud_restart(pg_url: str, pg: Database, tmp_path: Path) -> None:
    server = Cloud(pg_url, tmp_path / "cloud").start()
    world = make_world(pg)
    agent = Agent(tmp_path / "agent")
    agent.dock(server.url, enrolment_secret(world))
    agent_id = uuid.UUID(json.loads(agent.cli("status", "--json").stdout)["links"][0]["agent_id"])
    agent.start()
    lines = agent.state / "modules" / "noop" / "lines.log"
    try:
        eventually(lambda: "agent/v1/poll" in agent.log.read_text(), what="a first poll")
        server.kill()
        with system(pg, world.tenant_id) as ctx:  # issued while no cloud runs
            command_id = commands.issue(ctx, agent_id, "noop.append", {"text": "while down"}).id
        time.sleep(1.0)
        server.start()
        eventually(
            lambda: lines.exists() and f"{command_id} while down" in lines.read_text(),
            timeout=40,
            what="the command issued while the cloud was down",
        )
    finally:
        agent.stop()
        server.stop()


def test_shutdown_releases_held_polls_at_once(pg_url: str, pg: Database, tmp_path: Path) -> None:
    server = Cloud(pg_url, tmp_path / "cloud").start()
    world = make_world(pg)
    key = keys.generate(tmp_path / "k.key")
    body = p.EnrollRequest(
        token=enrolment_secret(world), public_key=keys.public_b64(key), host=p.HostFacts()
    )
    headers = {p.VERSION_HEADER: p.PROTOCOL_VERSION}
    enrolled = httpx.post(
        f"{server.url}/agent/v1/enroll", content=body.model_dump_json(), headers=headers
    ).json()
    assertion = keys.assertion(key, enrolled["agent_id"], enrolled["token_url"])
    token = httpx.post(
        f"{server.url}/agent/v1/token",
        headers=headers,
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": p.ASSERTION_TYPE,
            "client_assertion": assertion,
        },
    ).json()["access_token"]
    auth = headers | {"Authorization": f"Bearer {token}"}
    first = httpx.get(
        f"{server.url}/agent/v1/poll", params={"after": 0, "wait": 0}, headers=auth
    ).json()
    answers: list[httpx.Response] = []

    def hold() -> None:
        answers.append(
            httpx.get(
                f"{server.url}/agent/v1/poll",
                timeout=40,
                headers=auth,
                params={"after": 0, "wait": 25, "tag": first["tag"]},
            )
        )

    poller = threading.Thread(target=hold)
    poller.start()
    eventually(
        lambda: httpx.get(f"{server.url}/healthz").json()["held_polls"] == 1, what="a held poll"
    )
    took = server.stop()
    poller.join(5)
    assert took < 5, f"shutdown took {took:.1f}s with a held poll"
    assert answers[0].status_code == 503
    assert answers[0].json()["error"] == "shutting_down"
    assert 1 <= int(answers[0].headers["retry-after"]) <= 3


def test_poll_on_one_replica_wakes_for_a_command_issued_on_another(
    pg_url: str, pg: Database, tmp_path: Path
) -> None:
    one = Cloud(pg_url, tmp_path / "one").start()
    two = Cloud(pg_url, tmp_path / "two").start()
    try:
        world = make_world(pg)
        key = keys.generate(tmp_path / "k.key")
        body = p.EnrollRequest(
            token=enrolment_secret(world), public_key=keys.public_b64(key), host=p.HostFacts()
        )
        headers = {p.VERSION_HEADER: p.PROTOCOL_VERSION}
        enrolled = httpx.post(
            f"{one.url}/agent/v1/enroll", content=body.model_dump_json(), headers=headers
        ).json()
        # the token URL names replica one's public URL, so ask replica one for the token
        token = httpx.post(
            f"{one.url}/agent/v1/token",
            headers=headers,
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": p.ASSERTION_TYPE,
                "client_assertion": keys.assertion(
                    key, enrolled["agent_id"], enrolled["token_url"]
                ),
            },
        ).json()["access_token"]
        auth = headers | {"Authorization": f"Bearer {token}"}
        first = httpx.get(f"{one.url}/agent/v1/poll", params={"after": 0}, headers=auth).json()
        answers: list[tuple[float, httpx.Response]] = []

        def hold() -> None:
            start = time.monotonic()
            r = httpx.get(
                f"{one.url}/agent/v1/poll",
                timeout=40,
                headers=auth,
                params={"after": first["last_seq"], "wait": 25, "tag": first["tag"]},
            )
            answers.append((time.monotonic() - start, r))

        poller = threading.Thread(target=hold)
        poller.start()
        eventually(
            lambda: httpx.get(f"{one.url}/healthz").json()["held_polls"] == 1, what="a held poll"
        )
        issued = Gql(two.url, world.token).data(
            """mutation($a: ID!) { issueCommand(agentId: $a, name: "noop.echo", args: {}) {
            ... on Command { id } } }""",
            a=enrolled["agent_id"],
        )["issueCommand"]
        poller.join(30)
        held_for, response = answers[0]
        entries = response.json()["entries"]
        assert [e["command_id"] for e in entries] == [issued["id"]]
        assert held_for < 20, "woken by the other replica, not by the 25 s timeout"
    finally:
        one.stop()
        two.stop()
