"""GraphQL subscriptions across two cloud replicas on one PostgreSQL: what happens through
replica 2 reaches a subscriber on replica 1 by the bus; tenancy holds on the socket as in
a query; the upgrade refuses what has no principal or comes from another origin; and a
revoked token or an ended session sends nothing more and closes the socket.

The client is the `websockets` library (its sync client), speaking graphql-transport-ws."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from websockets.exceptions import ConnectionClosed, InvalidStatus

from dockyard.cloud.auth import sessions
from dockyard.cloud.domain.clock import SystemClock
from dockyard.cloud.domain.dashboard import QUIET_AFTER
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import Agent as AgentRow

from ..factories import Gql, World, enrol_agent, enrolment_secret, make_world, system
from ..live import Live, open_socket
from ..procs import Agent, Cloud

CHANGES = """subscription($t: ID!) { tenantChanges(tenantId: $t) { __typename
  ... on TenantChange { kind tenantId agent { id name tenantId lastSeenAt }
    job { id agentId state } }
  ... on Error { message } } }"""
PROGRESS = """subscription($j: ID!) { jobProgress(jobId: $j) { __typename
  ... on Job { id state progress } ... on Error { message } } }"""
ISSUE = """mutation($a: ID!) { issueCommand(agentId: $a, name: "noop.append",
  args: {text: "live"}) { __typename ... on Command { id jobId } ... on Error { message } } }"""
REVOKE_AGENT = """mutation($id: ID!) { revokeAgent(id: $id) { __typename
  ... on Agent { id } ... on Error { message } } }"""
CREATE_TOKEN = """mutation($t: ID!) { createApiToken(tenantId: $t, name: "live",
  expiresInDays: 1) { ... on NewApiToken { secret token { id } } } }"""
REVOKE_TOKEN = """mutation($id: ID!) { revokeApiToken(id: $id) { __typename } }"""


@pytest.fixture(scope="module")
def replicas(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Cloud]]:
    """Shared by the tests here: each makes worlds of its own."""
    folder = tmp_path_factory.mktemp("replicas")
    quick = {"DOCKYARD_QUIET_CHECK_INTERVAL_S": "0.5"}
    clouds = [Cloud(pg_url, folder / f"r{i}", env=quick) for i in range(2)]
    try:
        for cloud in clouds:
            cloud.start()
        yield clouds
    finally:
        for cloud in clouds:
            if cloud.proc is not None:
                cloud.stop()


def _until(live: Live, op: str, wanted: Any) -> list[dict[str, Any]]:
    """Every result of `op` up to and including the first for which `wanted` holds."""
    seen = []
    while True:
        data = live.data(op)
        seen.append(data)
        if wanted(data):
            return seen


def _change(kind: str, key: str, id_: str) -> Any:
    def wanted(data: dict[str, Any]) -> bool:
        change = data["tenantChanges"]
        return change["kind"] == kind and (change[key] or {}).get("id") == id_

    return wanted


def _online(agent_id: str) -> Any:
    def wanted(data: dict[str, Any]) -> bool:
        agent = data["tenantChanges"]["agent"] or {}
        return agent.get("id") == agent_id and agent.get("lastSeenAt") is not None

    return wanted


def _agent_id(agent: Agent) -> str:
    return str(json.loads(agent.cli("status", "--json").stdout)["links"][0]["agent_id"])


def _issue(gql: Gql, agent_id: str | uuid.UUID) -> str:
    made = gql.data(ISSUE, a=str(agent_id))["issueCommand"]
    assert made["__typename"] == "Command", made
    return str(made["jobId"])


def _revoke_agent(gql: Gql, agent_id: uuid.UUID) -> None:
    assert gql.data(REVOKE_AGENT, id=str(agent_id))["revokeAgent"]["__typename"] == "Agent"


def test_a_subscriber_on_replica_1_sees_an_agent_dock_and_its_job_run_through_replica_2(
    replicas: list[Cloud], pg: Database, tmp_path: Path
) -> None:
    one, two = replicas
    world = make_world(pg)
    with Live(one.url, token=world.token) as live:
        live.subscribe("t", CHANGES, t=str(world.tenant_id))
        assert live.data("t")["tenantChanges"]["kind"] == "RESYNC"

        agent = Agent(tmp_path / "agent")
        agent.dock(two.url, enrolment_secret(world))  # its enrolment reaches replica 2 only
        agent_id = _agent_id(agent)
        appeared = _until(live, "t", _change("AGENT", "agent", agent_id))[-1]["tenantChanges"]
        assert appeared["agent"]["tenantId"] == str(world.tenant_id)

        job_id = _issue(Gql(two.url, world.token), agent_id)  # the agent is not running yet
        live.subscribe("j", PROGRESS, j=job_id)
        first = live.data("j")["jobProgress"]
        assert (first["id"], first["state"]) == (job_id, "PENDING")

        agent.start()  # it polls replica 2 and reports its job's events there
        try:
            states = [
                d["jobProgress"]["state"]
                for d in _until(live, "j", lambda d: d["jobProgress"]["state"] == "SUCCEEDED")
            ]
            assert live.message("j")["type"] == "complete"  # a finished job ends its subscription
            # The tenant's subscription heard the job too, as the agent reported it, and
            # the agent turning online once replica 2 stored its first poll.
            heard: list[dict[str, Any]] = []
            job_heard, online = _change("JOB", "job", job_id), _online(agent_id)
            while not (any(map(job_heard, heard)) and any(map(online, heard))):
                heard.append(live.data("t"))
            job = next(d for d in heard if job_heard(d))["tenantChanges"]["job"]
            assert job["agentId"] == agent_id
        finally:
            agent.stop()
        assert states[-1] == "SUCCEEDED"
        assert set(states) <= {"PENDING", "RUNNING", "SUCCEEDED"}


def test_a_subscriber_hears_an_agent_go_quiet_when_its_last_poll_passes_the_threshold(
    replicas: list[Cloud], pg: Database, tmp_path: Path
) -> None:
    """Nothing is written when an agent falls silent; the replicas' `agents.quiet` timer
    tells the subscriber as the threshold passes, so the portal shows it without a reload."""
    one, _ = replicas
    world = make_world(pg)
    agent_id = enrol_agent(world, tmp_path)
    with Live(one.url, token=world.token) as live:
        live.subscribe("t", CHANGES, t=str(world.tenant_id))
        assert live.data("t")["tenantChanges"]["kind"] == "RESYNC"
        last = datetime.now(UTC) - QUIET_AFTER + timedelta(seconds=2)  # quiet in 2 s
        with system(pg, world.tenant_id) as ctx:
            ctx.session.execute(
                update(AgentRow).where(AgentRow.id == agent_id).values(last_seen_at=last)
            )
        heard = _until(live, "t", _change("AGENT", "agent", str(agent_id)))[-1]["tenantChanges"]
    assert datetime.fromisoformat(heard["agent"]["lastSeenAt"]) == last
    assert datetime.now(UTC) - last > QUIET_AFTER, "announced once the agent is quiet, not before"


def test_a_subscriber_of_tenant_b_hears_nothing_of_tenant_a(
    replicas: list[Cloud], pg: Database, tmp_path: Path
) -> None:
    one, two = replicas
    a, b = make_world(pg), make_world(pg)
    a_agent = enrol_agent(a, tmp_path)  # through the domain here: nothing is announced
    b_agents = [enrol_agent(b, tmp_path) for _ in range(2)]
    gql_a, gql_b = Gql(two.url, a.token), Gql(two.url, b.token)
    a_job = _issue(gql_a, a_agent)

    with Live(one.url, token=b.token) as live:
        # Another tenant's ids answer as ids that name nothing.
        for op, query, name, theirs in (
            ("x", CHANGES, "t", str(a.tenant_id)),
            ("y", PROGRESS, "j", a_job),
        ):
            live.subscribe(op, query, **{name: theirs})
            live.subscribe(op + "-missing", query, **{name: str(uuid.uuid4())})
            answer, missing = live.data(op), live.data(op + "-missing")
            assert answer == missing
            assert next(iter(answer.values()))["__typename"].endswith("NotFound"), answer
            assert live.message(op)["type"] == "complete"

        live.subscribe("t", CHANGES, t=str(b.tenant_id))
        assert live.data("t")["tenantChanges"]["kind"] == "RESYNC"
        _issue(gql_a, a_agent)  # a job, then an agent, of tenant A change through replica 2 ...
        _revoke_agent(gql_a, a_agent)
        _revoke_agent(gql_b, b_agents[0])  # ... then B's, each after A's
        seen = _until(live, "t", _change("AGENT", "agent", str(b_agents[0])))
        _revoke_agent(gql_b, b_agents[1])  # a later notification than any of A's
        seen += _until(live, "t", _change("AGENT", "agent", str(b_agents[1])))
        for data in seen:
            change = data["tenantChanges"]
            assert change["tenantId"] == str(b.tenant_id), change
            assert change["job"] is None, change
            assert change["agent"]["id"] in {str(x) for x in b_agents}, change


def _cookie_session(world: World) -> sessions.Issued:
    lifetimes = sessions.Lifetimes(timedelta(hours=1), timedelta(hours=8))
    with world.db.transaction() as session:
        return sessions.start(session, SystemClock(), world.user_id, lifetimes)


def _refused(url: str, **auth: Any) -> int:
    with pytest.raises(InvalidStatus) as refused:
        open_socket(url, **auth)
    return int(refused.value.response.status_code)


def test_the_upgrade_refuses_no_principal_and_other_origins(
    replicas: list[Cloud], pg: Database
) -> None:
    one = replicas[0]
    world = make_world(pg)
    cookie = f"{sessions.COOKIE}={_cookie_session(world).secret}"
    evil = "https://evil.example"
    assert _refused(one.url) == 401
    assert _refused(one.url, token="not-a-token") == 401
    assert _refused(one.url, cookie=f"{sessions.COOKIE}=forged") == 401
    # Cross-site WebSocket hijacking: the victim's cookie rides along with another page's
    # socket, which is refused before anything is read; so is a token from there.
    assert _refused(one.url, cookie=cookie, origin=evil) == 403
    assert _refused(one.url, token=world.token, origin=evil) == 403
    assert _refused(one.url, cookie=cookie, origin="null") == 403
    # A subscription POSTed is a clear 400, not a failed field.
    posted = httpx.post(
        f"{one.url}/graphql",
        json={"query": CHANGES, "variables": {"t": str(world.tenant_id)}},
        headers={"Authorization": f"Bearer {world.token}"},
    )
    assert posted.status_code == 400
    assert posted.json()["errors"][0]["message"] == "subscriptions are not allowed when using POST"
    # The portal's own page, with the cookie alone, is let in.
    with Live(one.url, cookie=cookie, origin=one.url) as live:
        live.subscribe("t", CHANGES, t=str(world.tenant_id))
        assert live.data("t")["tenantChanges"]["kind"] == "RESYNC"


def _closed_before_the_next_change(live: Live, gql: Gql, world: World, tmp_path: Path) -> int:
    """Cause a change the socket would be sent; it must close instead, sending nothing."""
    _revoke_agent(gql, enrol_agent(world, tmp_path))
    with pytest.raises(ConnectionClosed) as closed:
        _sent_nothing(live)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


def _sent_nothing(live: Live) -> None:
    """Read until the socket closes, asserting no result came."""
    while True:
        message = live.message("t")
        assert message["type"] != "next", f"sent after sign-out: {message}"


def test_a_revoked_token_or_an_ended_session_closes_the_socket(
    replicas: list[Cloud], pg: Database, tmp_path: Path
) -> None:
    one, two = replicas
    world = make_world(pg)
    owner = Gql(two.url, world.token)
    made = owner.data(CREATE_TOKEN, t=str(world.tenant_id))["createApiToken"]
    with Live(one.url, token=made["secret"]) as live:
        live.subscribe("t", CHANGES, t=str(world.tenant_id))
        assert live.data("t")["tenantChanges"]["kind"] == "RESYNC"
        owner.data(REVOKE_TOKEN, id=made["token"]["id"])  # through replica 2
        assert _closed_before_the_next_change(live, owner, world, tmp_path) == 4401

    issued = _cookie_session(world)
    cookie = f"{sessions.COOKIE}={issued.secret}"
    with Live(one.url, cookie=cookie, origin=one.url) as live:
        live.subscribe("t", CHANGES, t=str(world.tenant_id))
        assert live.data("t")["tenantChanges"]["kind"] == "RESYNC"
        signed_out = httpx.post(
            f"{two.url}/auth/logout",
            headers={
                "Cookie": f"{cookie}; {sessions.CSRF_COOKIE}={issued.csrf}",
                "X-CSRF-Token": issued.csrf,
            },
        )
        assert signed_out.status_code == 200, signed_out.text
        assert _closed_before_the_next_change(live, owner, world, tmp_path) == 4401


def test_on_the_embedded_default_a_change_reaches_a_subscriber_in_process(
    sqlite_url: str, tmp_path: Path
) -> None:
    """SQLite, one process: no NOTIFY, the bus hands the committed change over itself. And
    a quiet subscription whose token is revoked closes by itself, at its next recheck
    (every 0.5 s here), with nothing caused for it to send."""
    db = Database(sqlite_url)
    cloud = Cloud(sqlite_url, tmp_path / "cloud", env={"DOCKYARD_LIVE_RECHECK_S": "0.5"})
    cloud.start()
    try:
        world = make_world(db)
        agent_id = enrol_agent(world, tmp_path)
        owner = Gql(cloud.url, world.token)
        made = owner.data(CREATE_TOKEN, t=str(world.tenant_id))["createApiToken"]
        with Live(cloud.url, token=made["secret"]) as live:
            live.subscribe("t", CHANGES, t=str(world.tenant_id))
            assert live.data("t")["tenantChanges"]["kind"] == "RESYNC"
            _revoke_agent(owner, agent_id)
            _until(live, "t", _change("AGENT", "agent", str(agent_id)))
            owner.data(REVOKE_TOKEN, id=made["token"]["id"])
            with pytest.raises(ConnectionClosed) as closed:
                _sent_nothing(live)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 4401
    finally:
        cloud.stop()
        db.dispose()
