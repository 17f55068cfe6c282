"""A real agent (the installed CLI) docked in metadata mode with a real cloud: the cloud's
vm-lifecycle policy reaches it, its libvirt VMs turn idle under the injected clock, it
proposes, the cloud mails the owners (aiosmtpd) and orders the shutdowns, and the agent's
never-act list still refuses the cloud."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from dockyard.agent.modules.vm import module_at
from dockyard.agent.modules.vm.store import day_of
from dockyard.cloud.store.db import Database

from ..factories import Gql, enrolment_secret, make_world
from ..peers.libvirt_hosts import Domain, host_file
from ..procs import Agent, Cloud, eventually
from .test_cloud_catalog import POWER, VMS

START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
POLICY = {
    "signals": ["cpu"],
    "idle_days": 2,
    "sample_interval_s": 86400,
    "notice_hours": 0,
    "default_contact": "ops@example.com",
    "budget_share": 1.0,
}
DECISIONS = """query($t: ID!) { vmDecisions(tenantId: $t) { ... on VmDecisionConnection {
  edges { node { vmName status owner reasons noticeSentAt commandId error } } } } }"""
COMMAND = """query($id: ID!) { command(id: $id) { ... on Command { state resultCode } } }"""
APPROVE = """mutation($a: ID!, $n: Int!) { approveVmActions(agentId: $a, count: $n) {
  __typename ... on VmApproval { commandId released } } }"""
AUDIT = """query($t: ID!) { auditLog(tenantId: $t, first: 200) { ... on AuditRecordConnection {
  edges { node { action target outcome detail } } } } }"""


def _audit(gql: Gql, tenant: str) -> list[dict[str, Any]]:
    return [e["node"] for e in gql.data(AUDIT, t=tenant)["auditLog"]["edges"]]


def _days_sampled(state: Path, day: int) -> int:
    db = sqlite3.connect(f"file:{state / 'modules' / 'vm' / 'vm.sqlite'}?mode=ro", uri=True)
    try:
        return int(
            db.execute(
                "SELECT COUNT(DISTINCT native_id) FROM days WHERE day = ? AND signal = 'cpu'",
                (day,),
            ).fetchone()[0]
        )
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


@pytest.mark.slow
def test_docked_agent_proposes_and_the_cloud_notifies_and_commands(
    pg_url: str, pg: Database, tmp_path: Path, smtp: Any
) -> None:
    cloud = Cloud(
        pg_url,
        tmp_path / "cloud",
        env={
            "DOCKYARD_SMTP_HOST": "127.0.0.1",
            "DOCKYARD_SMTP_PORT": str(smtp.port),
            "DOCKYARD_SMTP_SENDER": "dockyard@cloud.example",
            "DOCKYARD_NOTICE_INTERVAL_S": "0.3",
        },
    ).start()
    agent = Agent(tmp_path / "agent")
    try:
        world = make_world(pg)
        gql = Gql(cloud.url, world.token)
        created = gql.data(
            """mutation($t: ID!, $d: JSON!) { createPolicy(tenantId: $t, name: "idle-vms",
            kind: "vm-lifecycle", document: $d) { __typename ... on Policy { id } } }""",
            t=str(world.tenant_id),
            d=POLICY,
        )["createPolicy"]
        gql.data(
            """mutation($p: ID!, $s: ID!) { assignPolicy(policyId: $p, targetKind: SITE,
            targetId: $s) { __typename } }""",
            p=created["id"],
            s=str(world.site_id),
        )

        agent.dock(cloud.url, enrolment_secret(world), "--max-flow", "metadata")
        uri = host_file(
            tmp_path,
            "kvm1",
            8,
            32768,
            [Domain("web1", owner="alice@example.com"), Domain("web2"), Domain("build1")],
        )
        agent.cli(
            "vm", "endpoint", "add", "lab", "--kind", "libvirt", "--libvirt-host", f"kvm1={uri}"
        )
        agent.cli("vm", "never-act", "add", "lab/web2", "--reason", "payroll")
        local = tmp_path / "local-policy.json"  # the agent's own cap, which the cloud cannot raise
        # One action a day for its three VMs: the cloud's policy asks for all (1.0).
        local.write_text(json.dumps({**POLICY, "budget_share": 0.34}))
        agent.cli("vm", "policy", "set", str(local))
        module = module_at(agent.state / "modules" / "vm")
        module.update_settings(worker_pause_s=0.2)
        module.close()
        clock_file = tmp_path / "clock"
        clock_file.write_text(START.isoformat())
        agent.start(env={"DOCKYARD_CLOCK": f"file:{clock_file}"})

        eventually(
            lambda: '"idle_days": 2' in agent.cli("vm", "policy", "show").stdout,
            what="the cloud's policy to reach the agent",
        )
        for day in range(5):
            now = START + timedelta(days=day)
            clock_file.write_text(now.isoformat())
            if day >= 1:  # libvirt gives rates from the second collection on
                eventually(
                    lambda now=now: _days_sampled(agent.state, day_of(now)) == 3,
                    timeout=30,
                    what=f"samples of day {day}",
                )
            else:
                time.sleep(1.0)

        def decided(done: int, held: int) -> Any:
            def check() -> list[dict[str, Any]] | None:
                items = gql.nodes(DECISIONS, t=str(world.tenant_id))
                states = [d["status"] for d in items]
                ok = states.count("DONE") == done and states.count("HELD") == held
                return items if ok else None

            return check

        # The loop closes: each decision takes the agent's result. The agent's budget lets
        # one go; the other is held until someone approves it.
        decisions = eventually(decided(1, 1), timeout=60, what="one shutdown done, one held")
        held = next(d for d in decisions if d["status"] == "HELD")
        assert held["error"].startswith("over_budget")
        agent_id = json.loads(agent.cli("status", "--json").stdout)["links"][0]["agent_id"]
        approved = gql.data(APPROVE, a=agent_id, n=1)["approveVmActions"]
        assert approved["released"] == 1
        decisions = eventually(decided(2, 0), timeout=60, what="the held one done after approval")
        assert all(d["commandId"] and d["error"] is None for d in decisions)
        assert sorted(d["vmName"] for d in decisions) == ["build1", "web1"]  # web2: never act
        assert all(d["noticeSentAt"] and d["reasons"] for d in decisions)
        smtp.wait(3)
        mails = [m for m in smtp.messages if "will be shut down" in m["Subject"]]
        assert sorted(m["To"] for m in mails) == ["alice@example.com", "ops@example.com"]
        held_mails = [m["To"] for m in smtp.messages if "wait for an approval" in m["Subject"]]
        assert held_mails == ["ops@example.com"], "the policy's contact, told once"
        link = re.search(
            rf"{re.escape(cloud.url)}/vm/notices/answer\?t=(\S+)", mails[0].get_content()
        )
        assert link is not None

        def powered_off() -> dict[str, str] | None:
            items = gql.nodes(VMS, t=str(world.tenant_id))
            states = {v["name"]: v["sightings"][0]["powerState"] for v in items}
            return states if states.get("web1") == "off" and states.get("build1") == "off" else None

        states = eventually(powered_off, timeout=60, what="the agent to shut both down")
        assert states["web2"] == "on"

        # Too late to skip: the shutdown was ordered. GET never spends the link.
        page = httpx.get(f"{cloud.url}/vm/notices/answer", params={"t": link.group(1)})
        assert page.status_code == 200
        late = httpx.post(f"{cloud.url}/vm/notices/answer", data={"t": link.group(1)})
        assert late.status_code == 400
        assert "too late" in late.text
        refused_links = [
            a
            for a in _audit(gql, str(world.tenant_id))
            if a["action"] == "vm.notice.link" and a["outcome"] == "refused"
        ]
        assert [a["detail"]["reason"] for a in refused_links] == [
            "too late: the shutdown has been ordered"
        ]

        # The cloud orders web2 off directly: the agent's never-act list refuses.
        web2 = next(v for v in gql.nodes(VMS, t=str(world.tenant_id)) if v["name"] == "web2")
        ordered = gql.data(POWER, s=web2["sightings"][0]["id"], a="POWER_OFF")["powerVm"]

        def finished() -> dict[str, Any] | None:
            c = gql.data(COMMAND, id=ordered["id"])["command"]
            return c if c["state"] in ("SUCCEEDED", "FAILED") else None

        command = eventually(finished, timeout=30, what="the refused command to finish")
        assert command["state"] == "FAILED"
        assert command["resultCode"] == "refused_by_safety_net"
        explained = json.loads(agent.cli("vm", "explain", "web2", "--json").stdout)
        assert explained["power_state"] == "on"

        # The agent's trail reaches the cloud's audit log: its refusal and its two actions.
        def trail() -> list[dict[str, Any]] | None:
            found = [
                a for a in _audit(gql, str(world.tenant_id)) if a["action"] == "agent.vm.power"
            ]
            codes = [a["detail"].get("code") for a in found]
            return found if "refused_by_safety_net" in codes else None

        powered = eventually(trail, timeout=30, what="the agent's audit trail in the cloud")
        refusals = {a["detail"]["code"]: a for a in powered if a["outcome"] == "refused"}
        assert set(refusals) == {"refused_by_safety_net", "over_budget"}
        never = refusals["refused_by_safety_net"]
        assert never["target"].endswith(f"/lab/{web2['sightings'][0]['nativeId']}")
        assert never["detail"]["source"] == "cloud"
        paid = sorted(a["detail"]["paid_by"] for a in powered if a["outcome"] == "ok")
        assert paid == ["approval", "budget"]
        approvals = [
            a for a in _audit(gql, str(world.tenant_id)) if a["action"] == "agent.vm.approve"
        ]
        assert [a["detail"]["source"] for a in approvals] == ["cloud"]
    finally:
        if agent.proc is not None:
            agent.stop()
        cloud.stop()
