"""Real agents (subprocesses of the installed CLI) docked with a real cloud: enrol, receive a
policy and commands, report, and all of it read back through GraphQL."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from dockyard.agent.protocol import FlowMode
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import AuditRecord, MetadataBatch

from ..factories import Gql, enrolment_secret, make_world, system
from ..procs import Agent, Cloud, eventually

ISSUE = """mutation($a: ID!, $name: String!, $args: JSON, $ttl: Int! = 3600) {
  issueCommand(agentId: $a, name: $name, args: $args, ttlSeconds: $ttl) {
    __typename ... on Command { id jobId state } ... on InvalidInput { message } } }"""
COMMAND = """query($id: ID!) { command(id: $id) { __typename ... on Command {
  state sentAt ackedAt resultCode job { state resultCode } } } }"""
JOB = """query($id: ID!) { job(id: $id) { __typename ... on Job {
  state progress resultCode events { edges { node { kind code detail } } } } } }"""


def agent_id_of(agent: Agent) -> str:
    return str(json.loads(agent.cli("status", "--json").stdout)["links"][0]["agent_id"])


def test_enrol_policy_command_events_graphql(cloud: Cloud, pg: Database, tmp_path: Path) -> None:
    world = make_world(pg)
    gql = Gql(cloud.url, world.token)
    agent = Agent(tmp_path / "agent")
    out = agent.dock(cloud.url, enrolment_secret(world), "--max-flow", "metadata")
    assert "docked" in out.stdout
    key_file = next(agent.state.glob("*.key"))
    assert key_file.stat().st_mode & 0o777 == 0o600
    agent_id = agent_id_of(agent)

    created = gql.data(
        """mutation($t: ID!) { createPolicy(tenantId: $t, name: "greet", kind: "noop",
        document: {greeting: "hello", interval_s: 30}) { __typename ... on Policy { id currentVersion } } }""",
        t=str(world.tenant_id),
    )["createPolicy"]
    assert created["__typename"] == "Policy"
    assigned = gql.data(
        """mutation($p: ID!, $s: ID!) { assignPolicy(policyId: $p, targetKind: SITE,
        targetId: $s) { __typename } }""",
        p=created["id"],
        s=str(world.site_id),
    )
    assert assigned["assignPolicy"]["__typename"] == "PolicyAssignment"

    agent.start()
    try:
        policy_file = agent.state / "modules" / "noop" / "policy.json"
        eventually(policy_file.exists, what="policy to reach the agent")
        assert json.loads(policy_file.read_text())["document"]["greeting"] == "hello"

        issued = gql.data(ISSUE, a=agent_id, name="noop.echo", args={"x": 1})["issueCommand"]
        assert issued["state"] == "QUEUED"

        def finished() -> dict[str, object] | None:
            c = gql.data(COMMAND, id=issued["id"])["command"]
            return c if c["state"] == "SUCCEEDED" else None

        command = eventually(finished, what="the command to succeed")
        assert command["sentAt"]
        assert command["ackedAt"]
        job = gql.data(JOB, id=issued["jobId"])["job"]
        assert job["state"] == "SUCCEEDED"
        events = [e["node"] for e in job["events"]["edges"]]
        assert [e["kind"] for e in events] == ["STARTED", "SUCCEEDED"]
        assert events[1]["detail"] == '{"x": 1}'  # metadata mode carries free text

        # a new policy version arrives once, in order
        gql.data(
            """mutation($p: ID!) { newPolicyVersion(policyId: $p, document: {greeting: "v2"}) {
            __typename } }""",
            p=created["id"],
        )
        eventually(lambda: json.loads(policy_file.read_text())["version"] == 2, what="policy v2")

        def listed() -> dict[str, Any]:
            answer = gql.data(
                """query($t: ID!) { agents(tenantId: $t) { ... on AgentConnection {
                edges { node { id lastSeenAt site { name } } } } } }""",
                t=str(world.tenant_id),
            )
            node: dict[str, Any] = answer["agents"]["edges"][0]["node"]
            return node

        node = listed()
        assert (node["id"], node["site"]["name"]) == (agent_id, "main")
        # The sweeper stores when the agent last polled on its own timer (every 5 s).
        eventually(lambda: listed()["lastSeenAt"] is not None, what="lastSeenAt stored")
        audit = gql.data(
            """query($t: ID!) { auditLog(tenantId: $t, first: 100) { ... on AuditRecordConnection {
            edges { node { action } } } } }""",
            t=str(world.tenant_id),
        )
        actions = {e["node"]["action"] for e in audit["auditLog"]["edges"]}
        assert {"agent.enroll", "policy.create", "policy.assign", "command.issue"} <= actions
    finally:
        assert agent.stop() == 0


def test_docking_unlocks_features_and_switches_them(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    world = make_world(pg, plan="free")
    gql = Gql(cloud.url, world.token)
    agent = Agent(tmp_path / "agent")
    agent.dock(cloud.url, enrolment_secret(world), "--max-flow", "data")
    features = agent.state / "modules" / "noop" / "features.json"
    agent.start()
    try:
        eventually(
            lambda: features.exists() and json.loads(features.read_text()) == ["catalog", "status"],
            what="the free plan's features",
        )
        gql.data(
            "mutation($t: ID!) { setPlan(tenantId: $t, plan: ENTERPRISE) { __typename } }",
            t=str(world.tenant_id),
        )
        eventually(
            lambda: "encryption" in json.loads(features.read_text()), what="enterprise features"
        )
        gql.data(
            "mutation($t: ID!) { setFlowMode(tenantId: $t, flowMode: CONFIG) { __typename } }",
            t=str(world.tenant_id),
        )
        eventually(
            lambda: "catalog" not in json.loads(features.read_text()),
            what="catalog switched off in config mode",
        )
        status = json.loads(agent.cli("status", "--json").stdout)["links"][0]
        assert status["flow_mode"] == "config"
    finally:
        agent.stop()


def test_revoking_ends_the_held_poll_and_refuses_the_agent(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    world = make_world(pg)
    gql = Gql(cloud.url, world.token)
    agent = Agent(tmp_path / "agent")
    agent.dock(cloud.url, enrolment_secret(world))
    agent_id = agent_id_of(agent)
    agent.start()
    try:
        eventually(lambda: "agent/v1/poll" in agent.log.read_text(), what="a held poll")
        time.sleep(0.5)
        started = time.monotonic()
        gql.data("mutation($a: ID!) { revokeAgent(id: $a) { __typename } }", a=agent_id)
        assert agent.wait_exit(timeout=15) == 3  # the agent stops: the cloud refuses it
        assert time.monotonic() - started < 10  # well before the 25 s poll would have ended
    finally:
        agent.stop()


@pytest.mark.parametrize("mode", ["config", "metadata", "data"])
def test_each_flow_mode_from_both_sides(
    cloud: Cloud, pg: Database, tmp_path: Path, mode: str
) -> None:
    """The agent sends a metadata batch only where the mode allows it (in `config` it fails
    the job with a code and sends nothing); the cloud stores and audits what it accepts."""
    world = make_world(pg, flow=FlowMode(mode))
    gql = Gql(cloud.url, world.token)
    agent = Agent(tmp_path / "agent")
    agent.dock(cloud.url, enrolment_secret(world), "--max-flow", "data")
    agent.start()
    try:
        issued = gql.data(ISSUE, a=agent_id_of(agent), name="noop.report")["issueCommand"]

        def finished() -> dict[str, object] | None:
            c = gql.data(COMMAND, id=issued["id"])["command"]
            return c if c["state"] in ("SUCCEEDED", "FAILED") else None

        command = eventually(finished, what="the report command to finish")
    finally:
        assert agent.stop() == 0
    with system(pg, world.tenant_id) as ctx:
        batches = ctx.session.scalars(select(MetadataBatch)).all()
        audits = ctx.session.scalars(
            select(AuditRecord).where(AuditRecord.action == "upload.metadata")
        ).all()
    if mode == "config":
        assert (command["state"], command["resultCode"]) == ("FAILED", "flow_mode_forbids")
        assert batches == []
        assert audits == [], "the agent never sent it, so the cloud had nothing to refuse"
    else:
        assert command["state"] == "SUCCEEDED"
        assert [b.records for b in batches] == [[{"lines": 0}]]
        assert [(a.outcome, a.detail["count"]) for a in audits] == [("ok", 1)]
