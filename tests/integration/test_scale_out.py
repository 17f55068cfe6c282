"""Two cloud replicas behind HAProxy on one PostgreSQL, agents through the proxy.

One replica killed with SIGKILL mid-run: every real agent holds its poll on the other within
30 s, and every command issued before and after the kill is carried out exactly once. A
rolling restart of both replicas with 500 simulated agents polling: every command issued
before, during and after it reaches its agent (the last round proves every agent is back).
"Back" is not "all 500 polls held at one instant": the cloud spreads the re-polls of a wave
of reconnecting agents over the poll window on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dockyard.agent import keys
from dockyard.agent import protocol as p
from dockyard.cloud.domain import enrolment
from dockyard.cloud.domain.clock import SystemClock
from dockyard.cloud.domain.context import Ctx
from dockyard.cloud.domain.principal import Principal
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import Command

from ..factories import Gql, World, enrolment_secret, make_world, system
from ..peers.haproxy import Haproxy
from ..procs import Agent, Cloud, eventually, free_port

ISSUE = """mutation($a: ID!, $t: String!) {
  issueCommand(agentId: $a, name: "noop.append", args: {text: $t}) { ... on Command { id } } }"""
ISSUE_MANY = """mutation($a: [ID!]!) {
  issueCommands(agentIds: $a, name: "noop.echo", ttlSeconds: 600) {
  ... on IssuedCommands { commands { id agentId } } } }"""


RAMP_S = 180
"""Generous: 500 agents take their tokens and first polls in 20 to 60 s on a loaded 2-core
machine."""


class Replicas:
    def __init__(self, pg_url: str, folder: Path) -> None:
        ports = [free_port(), free_port()]
        self.proxy = Haproxy(ports)
        env = {"DOCKYARD_PUBLIC_URL": self.proxy.url}
        self.clouds = [
            Cloud(pg_url, folder / f"r{i}", port=port, env=env) for i, port in enumerate(ports)
        ]

    def held(self) -> list[int]:
        out = []
        for cloud in self.clouds:
            try:
                out.append(int(httpx.get(f"{cloud.url}/healthz", timeout=2).json()["held_polls"]))
            except httpx.HTTPError:
                out.append(0)
        return out


@pytest.fixture
def replicas(pg_url: str, tmp_path: Path) -> Iterator[Replicas]:
    r = Replicas(pg_url, tmp_path)
    for cloud in r.clouds:
        cloud.start()
    r.proxy.start()
    try:
        yield r
    finally:
        r.proxy.stop()
        for cloud in r.clouds:
            cloud.stop()


def _agent_id(agent: Agent) -> str:
    return str(json.loads(agent.cli("status", "--json").stdout)["links"][0]["agent_id"])


def test_a_replica_killed_with_sigkill_loses_no_agent_and_no_command(
    replicas: Replicas, pg: Database, tmp_path: Path
) -> None:
    world = make_world(pg)
    agents = [Agent(tmp_path / f"agent-{i}") for i in range(3)]
    for agent in agents:
        agent.dock(replicas.proxy.url, enrolment_secret(world))
    ids = [_agent_id(a) for a in agents]
    for agent in agents:
        agent.start()
    gql = Gql(replicas.proxy.url, world.token)
    issued: dict[str, list[str]] = {i: [] for i in ids}
    try:
        eventually(lambda: sum(replicas.held()) == 3, timeout=30, what="three held polls")

        def issue(text: str) -> None:
            for agent_id in ids:
                made = gql.data(ISSUE, a=agent_id, t=text)["issueCommand"]
                issued[agent_id].append(made["id"])

        issue("before")
        _wait_succeeded(pg, world, issued)
        held = replicas.held()
        victim = replicas.clouds[held.index(max(held))]  # the one holding most polls
        survivor = next(c for c in replicas.clouds if c is not victim)
        victim.kill()
        killed_at = time.monotonic()
        issue("after")  # through the proxy, which now reaches only the survivor

        def all_on_survivor() -> bool:
            return int(httpx.get(f"{survivor.url}/healthz").json()["held_polls"]) == 3

        eventually(all_on_survivor, timeout=30, what="every agent polling the survivor")
        assert time.monotonic() - killed_at < 30
        _wait_succeeded(pg, world, issued)
        for agent, agent_id in zip(agents, ids, strict=True):
            lines = (agent.state / "modules" / "noop" / "lines.log").read_text().splitlines()
            assert [line.split()[0] for line in lines] == issued[agent_id], "each exactly once"
    finally:
        for agent in agents:
            agent.stop()


def _wait_succeeded(pg: Database, world: World, issued: dict[str, list[str]]) -> None:
    wanted = [uuid.UUID(c) for cs in issued.values() for c in cs]

    def done() -> bool:
        with system(pg, world.tenant_id) as ctx:
            states = [ctx.session.get(Command, c).state for c in wanted]  # type: ignore[union-attr]
        return all(s == "succeeded" for s in states)

    eventually(done, timeout=60, what="every command to succeed")


class SimAgent:
    """An agent speaking the protocol from this process: token, long poll, acks."""

    def __init__(self, agent_id: str, key: Any, token_url: str) -> None:
        self.id, self.key, self.token_url = agent_id, key, token_url
        self.access = ""
        self.after, self.tag = 0, ""
        self.received: list[str] = []
        self.polls = 0
        self.trouble: Counter[str] = Counter()
        """What went wrong, by kind: for the failure message, not for asserts."""

    async def run(self, http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        headers = {p.VERSION_HEADER: p.PROTOCOL_VERSION}
        while not stop.is_set():
            try:
                if not self.access:
                    form = {
                        "grant_type": "client_credentials",
                        "client_assertion_type": p.ASSERTION_TYPE,
                        "client_assertion": keys.assertion(self.key, self.id, self.token_url),
                    }
                    r = await http.post("/agent/v1/token", data=form, headers=headers)
                    if r.status_code != 200:
                        self.trouble[f"token {r.status_code}"] += 1
                        await asyncio.sleep(random.uniform(0.1, 1.0))
                        continue
                    self.access = r.json()["access_token"]
                auth = headers | {"Authorization": f"Bearer {self.access}"}
                params = {"after": self.after, "wait": 25, "tag": self.tag}
                r = await http.get("/agent/v1/poll", params=params, headers=auth)
                if r.status_code == 401:
                    self.access = ""
                    continue
                if r.status_code != 200:  # 503 from a draining replica, 502 from the proxy
                    self.trouble[f"poll {r.status_code}"] += 1
                    retry = float(r.headers.get("retry-after", "1"))
                    await asyncio.sleep(random.uniform(0, retry))
                    continue
                self.polls += 1
                answer = r.json()
                entries = answer["entries"]
                self.received += [e["command_id"] for e in entries if e["kind"] == "command"]
                if entries:
                    acks = {"acks": [{"seq": e["seq"]} for e in entries]}
                    await http.post("/agent/v1/acks", json=acks, headers=auth)
                self.after, self.tag = max(self.after, answer["last_seq"]), answer["tag"]
            except (httpx.TransportError, ValueError, KeyError) as e:
                self.trouble[type(e).__name__] += 1
                await asyncio.sleep(random.uniform(0.1, 1.0))


def _simulated(world: World, proxy_url: str, n: int) -> list[SimAgent]:
    """`n` agents enrolled through the domain (their keys made here)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    out = []
    secrets = [enrolment_secret(world) for _ in range(n)]
    with world.db.transaction() as session:
        ctx = Ctx(session, Principal("anonymous", None), SystemClock())
        for secret in secrets:
            key = Ed25519PrivateKey.generate()
            request = p.EnrollRequest(
                token=secret,
                public_key=keys.public_b64(key),
                host=p.HostFacts(hostname="sim"),
                modules=[p.ModuleInfo(name="noop", version="1")],
            )
            agent = enrolment.enroll(ctx, request)
            out.append(SimAgent(str(agent.id), key, f"{proxy_url}/agent/v1/token"))
    return out


def test_a_rolling_restart_with_500_agents_loses_none(replicas: Replicas, pg: Database) -> None:
    world = make_world(pg)
    sims = _simulated(world, replicas.proxy.url, 500)
    gql = Gql(replicas.proxy.url, world.token)

    def issue_to_all() -> dict[str, str]:
        out = {}
        for start in range(0, len(sims), 250):
            group = [s.id for s in sims[start : start + 250]]
            items = gql.data(ISSUE_MANY, a=group)["issueCommands"]["commands"]
            out |= {i["id"]: i["agentId"] for i in items}
        return out

    async def scenario() -> list[dict[str, str]]:
        stop = asyncio.Event()
        # A client per 50 agents: httpx's pool scans all its connections on every request,
        # so one client for 500 long polls spent more CPU than both replicas together.
        limits = httpx.Limits(max_connections=120, max_keepalive_connections=120)
        timeout = httpx.Timeout(60, connect=10)
        async with contextlib.AsyncExitStack() as clients:
            tasks = []
            for start in range(0, len(sims), 50):
                http = await clients.enter_async_context(
                    httpx.AsyncClient(base_url=replicas.proxy.url, limits=limits, timeout=timeout)
                )
                tasks += [asyncio.create_task(s.run(http, stop)) for s in sims[start : start + 50]]
            await _until(
                lambda: all(s.polls for s in sims),
                RAMP_S,
                "every agent's first poll",
                lambda: f"{replicas.held()} {sum((s.trouble for s in sims), Counter())}",
            )
            rounds = [await asyncio.to_thread(issue_to_all)]
            for i, cloud in enumerate(replicas.clouds):
                await asyncio.to_thread(cloud.stop)
                if i == 0:  # while one replica is down
                    rounds.append(await asyncio.to_thread(issue_to_all))
                await asyncio.to_thread(cloud.start)
            rounds.append(await asyncio.to_thread(issue_to_all))  # after both restarted
            everything = {c: a for r in rounds for c, a in r.items()}
            await _until(
                lambda: all(c in sims_by_id[a].received for c, a in everything.items()),
                RAMP_S,
                "every command received",
                lambda: f"{replicas.held()} {sum((s.trouble for s in sims), Counter())}",
            )
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return rounds

    sims_by_id = {s.id: s for s in sims}
    rounds = asyncio.run(scenario())
    assert [len(r) for r in rounds] == [len(sims)] * 3
    for issued in rounds:
        for command, agent_id in issued.items():
            assert command in sims_by_id[agent_id].received


async def _until(check: Any, timeout: float, what: str, detail: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(check):
            return
        await asyncio.sleep(0.2)
    more = f": {detail()}" if detail else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{more}")
