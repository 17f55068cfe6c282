"""Long-poll delivery at scale: N simulated agents against one cloud process on PostgreSQL.

    .venv/bin/python bench/poll_latency.py [--agents 10000] [--singles 300] [--bursts 5]
        [--replicas 2]

Every simulated agent speaks the real protocol: it enrols with its own Ed25519 key, gets
access tokens with a private_key_jwt assertion, long-polls with `wait=25`, and acks what it
receives. Commands are issued through GraphQL, as a user would. The script measures

- delivery latency, from just before the issuing GraphQL request to the agent's receipt of
  the poll answer: single commands (`issueCommand`) at random agents one at a time, and
  bursts of one command to each of 200 distinct agents in one `issueCommands` request;
- the cloud's RSS per held poll (RSS with every poll held minus RSS before any agent
  polled, over N), its CPU while holding and while delivering, the database connections in
  use (pg_stat_activity for the bench database);
- after a SIGTERM and a fresh start on the same port, the time until every agent holds a
  poll again (the cloud's `/healthz` counts held polls).

The anchor is a 10 s poll interval (the default of the agent systems our users would
otherwise pick), whose expected delivery latency is 5 s and worst case 10 s: the ratio
printed is our p99 over 10 s.

Absolute latencies move threefold from one machine to the next, so the same run also
measures a floor (`bench/poll_floor.py`): the same agents, the same number of held polls and
the same single and burst deliveries against the cloud's server stack (uvicorn, starlette,
the cloud's server settings) holding polls with no database and no tokens, released by a
request that names the agents. `p99_vs_floor` and `burst_p99_vs_floor` are ours over it;
goals: at most 3x and 2x. `--replicas N` runs N clouds behind HAProxy on the one database
(agents and GraphQL through the proxy, the restart a rolling one); the floor stays one
server without a proxy. The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dockyard.agent import keys
from dockyard.agent import protocol as p
from dockyard.agent.runner import BACKOFF_BASE_S, BACKOFF_CAP_S

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
H = {p.VERSION_HEADER: p.PROTOCOL_VERSION}
ANCHOR_INTERVAL_S = 10.0
ISSUE = """mutation($a: ID!) { issueCommand(agentId: $a, name: "noop.echo", ttlSeconds: 600) {
  __typename ... on Command { id } ... on Error { message } } }"""
ISSUE_MANY = """mutation($a: [ID!]!) {
  issueCommands(agentIds: $a, name: "noop.echo", ttlSeconds: 600) {
  __typename ... on IssuedCommands { commands { id } } ... on Error { message } } }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def host_port(url: str) -> tuple[str, int]:
    host, port = url.rsplit("//", 1)[1].rsplit(":", 1)
    return host, int(port)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class ProcStat:
    """CPU seconds and RSS of a process, from /proc."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.pid = pids[0]
        self.tick = os.sysconf("SC_CLK_TCK")

    def cpu_s(self) -> float:
        total = 0.0
        for pid in self.pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / self.tick
        return total

    def rss_kb(self) -> int:
        total = 0
        for pid in self.pids:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total


class CloudProc:
    def __init__(self, db_url: str, data: Path, port: int, public_url: str = "") -> None:
        self.url = f"http://127.0.0.1:{port}"
        data.mkdir(parents=True, exist_ok=True)
        self.env = os.environ | {
            "DOCKYARD_DATABASE_URL": db_url,
            "DOCKYARD_DATA_DIR": str(data),
            "DOCKYARD_PUBLIC_URL": public_url or self.url,
            "DOCKYARD_PORT": str(port),
            "DOCKYARD_SECRET_KEY": "bench-secret-key-0123456789-0123456789-0123456789",
            "DOCKYARD_LOG_LEVEL": "warning",
        }
        self.log = data / "cloud.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        started = time.monotonic()
        out = open(self.log, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [str(BIN / "dockyard"), "serve"], env=self.env, stdout=out, stderr=subprocess.STDOUT
        )
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"cloud exited:\n{self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.05)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)

    def held(self) -> int:
        """Polls held now; -1 while the cloud is too busy to answer its health check."""
        try:
            return int(httpx.get(f"{self.url}/healthz", timeout=5).json()["held_polls"])
        except httpx.HTTPError:
            return -1


class Cluster:
    """`--replicas N`: N clouds on the one database behind HAProxy (Debian's package, as
    `tests/peers/haproxy.py` runs it: health checks on /readyz), agents and GraphQL
    through the proxy. Its restart is a rolling one, replica after replica."""

    def __init__(self, db_url: str, data: Path, replicas: int) -> None:
        ports = [free_port() for _ in range(replicas)]
        self.proxy: Any = None
        self.url = f"http://127.0.0.1:{ports[0]}"
        if replicas > 1:
            sys.path.insert(0, str(ROOT))
            from tests.peers.haproxy import Haproxy

            self.proxy = Haproxy(ports)
            self.url = self.proxy.url
        self.clouds = [
            CloudProc(db_url, data / f"replica-{i}", port, self.url) for i, port in enumerate(ports)
        ]

    @property
    def pids(self) -> list[int]:
        return [c.proc.pid for c in self.clouds if c.proc is not None]

    def start(self) -> float:
        started = max(c.start() for c in self.clouds)
        if self.proxy is not None and self.proxy.proc is None:
            self.proxy.start()
        return started

    def restart(self) -> tuple[float, float]:
        stop_s = start_s = 0.0
        for cloud in self.clouds:
            t = time.monotonic()
            cloud.stop()
            stop_s += time.monotonic() - t
            start_s += cloud.start()
        return stop_s, start_s

    def stop(self) -> None:
        for cloud in self.clouds:
            if cloud.proc is not None and cloud.proc.poll() is None:
                cloud.stop()
        if self.proxy is not None:
            self.proxy.stop()

    def held(self) -> int:
        counts = [c.held() for c in self.clouds]
        return -1 if min(counts) < 0 else sum(counts)


class Conn:
    """One kept-alive HTTP/1.1 connection on asyncio streams.

    Ten thousand agents in one process spend most of their time in the HTTP client, and
    httpx costs more per request than the cloud does; this speaks just enough HTTP/1.1 for
    polls and acks (Content-Length bodies, keep-alive), so the figures measure the cloud."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, target: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        try:
            self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
            status_line = await self.reader.readuntil(b"\r\n")
            if not status_line:
                raise ConnectionError("closed")
            status = int(status_line.split()[1])
            reply: dict[str, str] = {}
            while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
                name, _, value = line.decode().partition(":")
                reply[name.strip().lower()] = value.strip()
            data = await self.reader.readexactly(int(reply.get("content-length", "0")))
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
            self.close()
            raise ConnectionError(str(e) or type(e).__name__) from e
        if reply.get("connection", "").lower() == "close":
            self.close()
        return status, reply, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class SimAgent:
    """One agent: its key, its token, its poll loop."""

    def __init__(self, bench: Bench, key: Ed25519PrivateKey, agent_id: str, token_url: str):
        self.bench, self.key, self.id, self.token_url = bench, key, agent_id, token_url
        self.access = ""
        self.http: httpx.AsyncClient = bench.client_for(agent_id)
        self.conn = Conn(*host_port(bench.url))
        self.after = 0
        self.tag = ""
        self.polls = 0

    def to_floor(self, url: str) -> None:
        """Poll the floor server from now on: it takes the agent's id as its bearer."""
        self.conn.close()
        self.conn = Conn(*host_port(url))
        self.access, self.after, self.tag = self.id, 0, ""

    async def token(self) -> None:
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": p.ASSERTION_TYPE,
            "client_assertion": keys.assertion(self.key, self.id, self.token_url),
        }
        r = await self.http.post("/agent/v1/token", data=form, headers=H)
        r.raise_for_status()
        self.access = r.json()["access_token"]

    async def run(self) -> None:
        """The agent's schedule (full jitter, the runner's base and cap, never sooner than
        a Retry-After), on asyncio: the runner's own tenacity loop sleeps a thread."""
        failures = 0
        while not self.bench.stopping:
            try:
                asked = await self.round()
            except (httpx.HTTPError, ConnectionError, ValueError, KeyError) as e:
                self.bench.errors[type(e).__name__] = self.bench.errors.get(type(e).__name__, 0) + 1
                asked = 0.0
            else:
                if asked is None:
                    failures = 0
                    continue
            ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**failures)
            failures = min(failures + 1, 30)
            await asyncio.sleep(max(random.uniform(0, ceiling), min(asked, BACKOFF_CAP_S)))

    async def round(self) -> float | None:
        """One poll and its acks; a Retry-After (or 0) when the cloud asks to wait."""
        if not self.access:
            await self.token()
        headers = H | {"Authorization": f"Bearer {self.access}"}
        target = f"/agent/v1/poll?after={self.after}&wait=25&tag={self.tag}"
        status, reply, body = await self.conn.request("GET", target, headers)
        if status == 401:
            self.access = ""
            return None
        if status != 200:
            return float(reply.get("retry-after", 0))
        received = time.perf_counter()
        self.polls += 1
        answer = json.loads(body)
        self.tag = answer["tag"]
        entries = answer["entries"]
        for entry in entries:
            if entry["kind"] == "command":
                self.bench.received(entry["command_id"], received)
        if entries:
            acks = json.dumps({"acks": [{"seq": e["seq"]} for e in entries]}).encode()
            ack_headers = headers | {"Content-Type": "application/json"}
            status, _, _ = await self.conn.request("POST", "/agent/v1/acks", ack_headers, acks)
            if status != 200:
                raise ConnectionError(f"ack answered {status}")
        self.after = max(self.after, answer["last_seq"])
        return None


class LoopWatch:
    """How late the bench's own event loop wakes.

    The agents' receipts are stamped on this loop, so a late wake-up here reads as delivery
    latency though the cloud had answered; this figure says how much of a tail is ours."""

    TICK_S = 0.005

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.TICK_S)
            self.lags.append(time.perf_counter() - before - self.TICK_S)

    def start(self) -> None:
        self.lags.clear()
        self._task = asyncio.create_task(self._tick())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None


class Bench:
    def __init__(self, args: argparse.Namespace, url: str) -> None:
        self.args = args
        self.url = url
        self.stopping = False
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self.early: dict[str, float] = {}
        self.issue_s: list[float] = []
        self.errors: dict[str, int] = {}
        self.clients: list[httpx.AsyncClient] = []

    def client_for(self, agent_id: str) -> httpx.AsyncClient:
        """Agents share clients in groups of 100: httpx's pool scans its connections on
        every request, which costs more than the cloud itself at thousands of them."""
        if not self.clients:
            limits = httpx.Limits(max_connections=200, max_keepalive_connections=None)
            timeout = httpx.Timeout(60.0, connect=30.0)
            n = max(1, (self.args.agents + 99) // 100)
            self.clients = [
                httpx.AsyncClient(base_url=self.url, limits=limits, timeout=timeout)
                for _ in range(n)
            ]
        return self.clients[hash(agent_id) % len(self.clients)]

    def received(self, command_id: str, at: float) -> None:
        future = self.waiting.pop(command_id, None)
        if future is None:
            self.early[command_id] = at
        elif not future.done():
            future.set_result(at)

    async def issue(self, gql: httpx.AsyncClient, agent: SimAgent) -> float:
        """One command to one agent; seconds from the request to the agent's receipt."""
        started = time.perf_counter()
        r = await gql.post("/graphql", json={"query": ISSUE, "variables": {"a": agent.id}})
        result = r.json()["data"]["issueCommand"]
        if result["__typename"] != "Command":
            raise SystemExit(f"issueCommand failed: {result}")
        self.issue_s.append(time.perf_counter() - started)
        return await self.receipt(result["id"]) - started

    async def issue_many(self, gql: httpx.AsyncClient, group: list[SimAgent]) -> list[float]:
        """One command to each agent of `group` in one request; each one's latency."""
        started = time.perf_counter()
        variables = {"a": [a.id for a in group]}
        r = await gql.post("/graphql", json={"query": ISSUE_MANY, "variables": variables})
        result = r.json()["data"]["issueCommands"]
        if result["__typename"] != "IssuedCommands":
            raise SystemExit(f"issueCommands failed: {result}")
        self.issue_s.append(time.perf_counter() - started)
        ids = [c["id"] for c in result["commands"]]
        return [at - started for at in await asyncio.gather(*(self.receipt(i) for i in ids))]

    async def issue_floor(self, floor: httpx.AsyncClient, group: list[SimAgent]) -> list[float]:
        """The floor's signal: one entry to each agent of `group` in one request."""
        started = time.perf_counter()
        r = await floor.post("/issue", json={"agents": [a.id for a in group]})
        self.issue_s.append(time.perf_counter() - started)
        ids = [c["id"] for c in r.json()["items"]]
        return [at - started for at in await asyncio.gather(*(self.receipt(i) for i in ids))]

    async def receipt(self, command_id: str) -> float:
        if command_id in self.early:
            return self.early.pop(command_id)
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[command_id] = future
        return await asyncio.wait_for(future, 60)


def setup_world(db_url: str, n: int) -> tuple[str, list[str]]:
    """A tenant, a site, an API token and `n` enrolment tokens, through the domain."""
    from dockyard.agent.protocol import FlowMode
    from dockyard.cloud.cli import bootstrap, issue_token
    from dockyard.cloud.domain import enrolment
    from dockyard.cloud.domain.clock import SystemClock
    from dockyard.cloud.domain.context import Ctx
    from dockyard.cloud.domain.principal import Principal
    from dockyard.cloud.settings import Settings
    from dockyard.cloud.store.db import Database

    settings = Settings(database_url=db_url, secret_key="x" * 48)
    ids = bootstrap(
        settings, "Bench MSP", "Bench", "bench@example.com", flow=FlowMode.CONFIG, plan="free"
    )
    api = issue_token(settings, ids["user_id"])
    tenant, site = uuid.UUID(ids["tenant_id"]), uuid.UUID(ids["site_id"])
    db = Database(db_url)
    secrets: list[str] = []
    for start in range(0, n, 1000):
        with db.transaction(frozenset({tenant})) as session:
            ctx = Ctx(session, Principal.system(frozenset({tenant})), SystemClock())
            for _ in range(min(1000, n - start)):
                made = enrolment.create_token(ctx, site, FlowMode.CONFIG, timedelta(hours=2))
                secrets.append(made.secret)
    db.dispose()
    return api, secrets


async def enrol(http: httpx.AsyncClient, bench: Bench, secrets: list[str]) -> list[SimAgent]:
    agents: list[SimAgent] = []
    gate = asyncio.Semaphore(64)

    async def one(secret: str) -> None:
        key = Ed25519PrivateKey.generate()
        body = p.EnrollRequest(
            token=secret,
            public_key=keys.public_b64(key),
            host=p.HostFacts(hostname=f"sim-{len(agents)}"),
            modules=[p.ModuleInfo(name="noop", version="1")],
        )
        async with gate:
            for attempt in range(3):
                try:
                    r = await http.post(
                        "/agent/v1/enroll", content=body.model_dump_json(), headers=H
                    )
                    break
                except httpx.TransportError:  # a kept-alive connection the server closed
                    if attempt == 2:
                        raise
        r.raise_for_status()
        answer = r.json()
        agents.append(SimAgent(bench, key, answer["agent_id"], answer["token_url"]))

    await asyncio.gather(*(one(s) for s in secrets))
    return agents


async def single_deliveries(
    bench: Bench,
    agents: list[SimAgent],
    args: argparse.Namespace,
    send: Callable[[SimAgent], Awaitable[float]],
) -> list[float]:
    """`args.singles` deliveries to random agents, one at a time, a few ms apart."""
    singles: list[float] = []
    started = time.perf_counter()
    for _ in range(args.singles):
        at = time.perf_counter() - started
        singles.append(await send(random.choice(agents)))
        if os.environ.get("BENCH_DEBUG") and singles[-1] > 0.1:
            issue_ms = bench.issue_s[-1] * 1000
            print(
                f"single at {at:.1f}s: {singles[-1] * 1000:.0f} ms "
                f"(issue answered in {issue_ms:.0f} ms)",
                file=sys.stderr,
            )
        await asyncio.sleep(random.uniform(0.005, 0.03))
    return singles


async def burst_deliveries(
    bench: Bench,
    agents: list[SimAgent],
    args: argparse.Namespace,
    send: Callable[[list[SimAgent]], Awaitable[list[float]]],
) -> list[float]:
    """`args.bursts` deliveries to `args.burst_size` distinct agents in one request each."""
    burst: list[float] = []
    for _ in range(args.bursts):
        group = random.sample(agents, args.burst_size)
        t = time.monotonic()
        burst += await send(group)
        print(f"burst delivered in {time.monotonic() - t:.2f}s", file=sys.stderr)
        if os.environ.get("BENCH_DEBUG"):
            print(sorted(round(x, 2) for x in burst[-args.burst_size :]), file=sys.stderr)
        await asyncio.sleep(1)
    return burst


async def floor_phase(
    bench: Bench, agents: list[SimAgent], args: argparse.Namespace, data: Path
) -> tuple[list[float], list[float]]:
    """The same agents, polls and deliveries against `poll_floor.py`, in this run."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(data / "floor.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "poll_floor.py"), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        floor = FloorProc(url, proc)
        await asyncio.to_thread(floor.wait_up)
        bench.stopping = False
        for agent in agents:
            agent.to_floor(url)
        tasks = [asyncio.create_task(a.run()) for a in agents]
        await wait_held(floor, len(agents), 300)
        await asyncio.sleep(2)
        async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(60.0)) as client:
            gc.disable()
            singles = await single_deliveries(
                bench, agents, args, lambda a: first(bench.issue_floor(client, [a]))
            )
            burst = await burst_deliveries(
                bench, agents, args, lambda g: bench.issue_floor(client, g)
            )
            gc.enable()
        print(f"floor: {len(singles)} singles, {len(burst)} in bursts", file=sys.stderr)
        bench.stopping = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return singles, burst


async def first(many: Awaitable[list[float]]) -> float:
    return (await many)[0]


class FloorProc:
    """The floor server's health check, shaped like `CloudProc`'s for `wait_held`."""

    def __init__(self, url: str, proc: subprocess.Popen[bytes]) -> None:
        self.url, self.proc = url, proc

    def wait_up(self) -> None:
        while self.held() < 0:
            if self.proc.poll() is not None:
                raise SystemExit("the floor server exited")
            time.sleep(0.05)

    def held(self) -> int:
        try:
            return int(httpx.get(f"{self.url}/healthz", timeout=5).json()["held_polls"])
        except httpx.HTTPError:
            return -1


def db_connections(admin_url: str, name: str) -> int:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchone()
        return int(row[0]) if row else 0


async def wait_held(cloud: Cluster | FloorProc, n: int, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        held = await asyncio.to_thread(cloud.held)
        if held >= n:
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    raise SystemExit(f"only {await asyncio.to_thread(cloud.held)} of {n} polls held")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.agents + 2500 > hard:
        raise SystemExit(f"open-file limit {hard} is too low for {args.agents} agents")

    name = f"dockyard_bench_{os.getpid()}"
    with psycopg.connect(args.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = args.admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    db_url = f"{base}/{name}"
    data = Path(args.work) / name
    data.mkdir(parents=True)
    cloud = Cluster(db_url, data, args.replicas)
    bench = Bench(args, cloud.url)
    try:
        cloud.start()
        api, secrets = await asyncio.to_thread(setup_world, db_url, args.agents)
        limits = httpx.Limits(max_connections=100)
        timeout = httpx.Timeout(60.0, connect=30.0)
        async with (
            httpx.AsyncClient(base_url=cloud.url, limits=limits, timeout=timeout) as http,
            httpx.AsyncClient(
                base_url=cloud.url,
                headers={"Authorization": f"Bearer {api}"},
                limits=httpx.Limits(max_connections=250),
                timeout=timeout,
            ) as gql,
        ):
            t = time.monotonic()
            agents = await enrol(http, bench, secrets)
            enrol_s = time.monotonic() - t
            print(f"enrolled {len(agents)} agents in {enrol_s:.1f}s", file=sys.stderr)
            stat = ProcStat(cloud.pids)
            await asyncio.sleep(1)
            rss_idle = stat.rss_kb()

            gate = asyncio.Semaphore(200)

            async def first_token(a: SimAgent) -> None:
                async with gate:
                    for attempt in range(5):
                        try:
                            await a.token()
                            return
                        except httpx.TransportError:
                            # A kept-alive connection the server closed while enrolment
                            # went on; the pool may hold several, so try a few times.
                            if attempt == 4:
                                raise

            await asyncio.gather(*(first_token(a) for a in agents))
            # The bench's own objects (keys, clients, agents) live to the end: frozen, and
            # its full collections off (as the cloud's are, see cloud/collector.py), so
            # the instrument adds no pauses of its own to the latencies it stamps.
            gc.collect()
            gc.freeze()
            young, middle, _ = gc.get_threshold()
            gc.set_threshold(young, middle, 2**31 - 1)
            tasks = [asyncio.create_task(a.run()) for a in agents]
            ramp_s = await wait_held(cloud, len(agents), 300)
            await asyncio.sleep(2)
            rss_held = stat.rss_kb()
            connections = await asyncio.to_thread(db_connections, args.admin_url, name)
            cpu0, w0 = stat.cpu_s(), time.monotonic()
            spy = None
            if args.profile:  # where the holding process spends its CPU (py-spy, raw stacks)
                spy_args = ["-p", str(stat.pid), "-d", str(int(args.idle_s)), "-r", "100"]
                spy = subprocess.Popen(
                    [str(BIN / "py-spy"), "record", *spy_args, "-f", "raw", "-o", args.profile],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            await asyncio.sleep(args.idle_s)
            if spy is not None:
                await asyncio.to_thread(spy.wait)
            idle_cpu = (stat.cpu_s() - cpu0) / (time.monotonic() - w0)
            print(f"{len(agents)} polls held after {ramp_s:.1f}s", file=sys.stderr)

            watch = LoopWatch()
            watch.start()
            # The measured minutes run with the bench's own collector off: even its young
            # collections stopped it for up to 120 ms with 10,000 agents' state in the heap,
            # and a stamp taken late reads as latency. The cloud's collector runs as tuned.
            gc.disable()
            cpu0, w0 = stat.cpu_s(), time.monotonic()
            singles = await single_deliveries(bench, agents, args, lambda a: bench.issue(gql, a))
            busy_cpu = (stat.cpu_s() - cpu0) / (time.monotonic() - w0)
            watch.stop()
            single_issue_ms = [x * 1000 for x in bench.issue_s]
            lags = [x * 1000 for x in watch.lags]
            print(f"{len(singles)} single commands delivered", file=sys.stderr)

            bench.issue_s.clear()
            burst = await burst_deliveries(bench, agents, args, lambda g: bench.issue_many(gql, g))
            gc.enable()
            peak_connections = await asyncio.to_thread(db_connections, args.admin_url, name)

            t = time.monotonic()
            stop_s, start_s = await asyncio.to_thread(cloud.restart)
            print(f"restarted; agent errors so far {bench.errors}", file=sys.stderr)
            await wait_held(cloud, len(agents), 300)
            reconnect_s = time.monotonic() - t

            bench.stopping = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.to_thread(cloud.stop)

            floor_singles, floor_burst = await floor_phase(bench, agents, args, data)
            for client in bench.clients:
                await client.aclose()
    finally:
        cloud.stop()
        with psycopg.connect(args.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    ms = [x * 1000 for x in singles]
    bms = [x * 1000 for x in burst]
    fms = [x * 1000 for x in floor_singles]
    fbms = [x * 1000 for x in floor_burst]
    return {
        "agents": len(agents),
        "replicas": args.replicas,
        "p50_ms": round(statistics.median(ms), 1),
        "p99_ms": round(pct(ms, 0.99), 1),
        "single_issue_p50_ms": round(statistics.median(single_issue_ms), 1),
        "single_issue_p99_ms": round(pct(single_issue_ms, 0.99), 1),
        "bench_loop_lag_p99_ms": round(pct(lags, 0.99), 1),
        "bench_loop_lag_max_ms": round(max(lags), 1),
        "burst_size": args.burst_size,
        "burst_p50_ms": round(statistics.median(bms), 1),
        "burst_p99_ms": round(pct(bms, 0.99), 1),
        "burst_issue_ms_max": round(max(bench.issue_s) * 1000, 1),
        "rss_kb_per_poll": round((rss_held - rss_idle) / len(agents), 2),
        "rss_idle_mb": round(rss_idle / 1024, 1),
        "rss_held_mb": round(rss_held / 1024, 1),
        "cpu_holding_pct": round(100 * idle_cpu, 1),
        "cpu_delivering_pct": round(100 * busy_cpu, 1),
        "db_connections_holding": connections,
        "db_connections_after_bursts": peak_connections,
        "enrol_s": round(enrol_s, 1),
        "ramp_s": round(ramp_s, 1),
        "reconnect_s": round(reconnect_s, 1),
        "restart_stop_s": round(stop_s, 1),
        "restart_start_s": round(start_s, 1),
        "agent_errors": bench.errors,
        "anchor_interval_s": ANCHOR_INTERVAL_S,
        "p99_vs_anchor": round(pct(ms, 0.99) / 1000 / ANCHOR_INTERVAL_S, 4),
        "burst_p99_vs_anchor": round(pct(bms, 0.99) / 1000 / ANCHOR_INTERVAL_S, 4),
        "floor_p50_ms": round(statistics.median(fms), 1),
        "floor_p99_ms": round(pct(fms, 0.99), 1),
        "floor_burst_p50_ms": round(statistics.median(fbms), 1),
        "floor_burst_p99_ms": round(pct(fbms, 0.99), 1),
        "p99_vs_floor": round(pct(ms, 0.99) / pct(fms, 0.99), 2),
        "burst_p99_vs_floor": round(pct(bms, 0.99) / pct(fbms, 0.99), 2),
        "p99_vs_floor_goal": 3.0,
        "burst_p99_vs_floor_goal": 2.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--agents", type=int, default=10_000)
    ap.add_argument("--singles", type=int, default=300, help="single commands, one at a time")
    ap.add_argument("--bursts", type=int, default=5)
    ap.add_argument("--burst-size", type=int, default=200)
    ap.add_argument("--idle-s", type=float, default=10.0, help="seconds to watch idle CPU")
    ap.add_argument("--replicas", type=int, default=1, help="clouds behind HAProxy (1: no proxy)")
    ap.add_argument(
        "--admin-url",
        default=os.environ.get("DOCKYARD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    ap.add_argument("--work", default=str(ROOT / "build" / "bench"))
    ap.add_argument("--profile", help="write py-spy stacks of the idle cloud to this file")
    args = ap.parse_args()
    if args.profile and not (BIN / "py-spy").exists():
        ap.error(f"--profile needs py-spy in this venv: {BIN / 'pip'} install py-spy")
    figures = asyncio.run(main_async(args))
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
