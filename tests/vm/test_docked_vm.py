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
DECISIONS = """query($t: ID!) { vmDecisions(tenantId: $t) { ... on VmDecisionList { items {
  vmName status owner reasons noticeSentAt commandId error } } } }"""
COMMAND = """query($id: ID!) { command(id: $id) { ... on Command { state resultCode } } }"""
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
            """mutation($p: ID!, $s: ID!) { assignPolicy(policyId: $p, targetKind: "site",
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
        local.write_text(json.dumps(POLICY))
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

        def decided() -> list[dict[str, Any]] | None:
            items = gql.data(DECISIONS, t=str(world.tenant_id))["vmDecisions"]["items"]
            done = [d for d in items if d["status"] == "done"]
            return items if len(done) == 2 else None

        # The loop closes: each decision takes the agent's result, not just "commanded".
        decisions = eventually(decided, timeout=60, what="two shutdowns done on the agent")
        assert all(d["commandId"] and d["error"] is None for d in decisions)
        assert sorted(d["vmName"] for d in decisions) == ["build1", "web1"]  # web2: never act
        assert all(d["noticeSentAt"] and d["reasons"] for d in decisions)
        mails = smtp.wait(2)
        assert sorted(m["To"] for m in mails) == ["alice@example.com", "ops@example.com"]
        link = re.search(
            rf"{re.escape(cloud.url)}/vm/notices/answer\?t=(\S+)", mails[0].get_content()
        )
        assert link is not None

        def powered_off() -> dict[str, str] | None:
            items = gql.data(VMS, t=str(world.tenant_id))["vms"]["items"]
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
        web2 = next(
            v for v in gql.data(VMS, t=str(world.tenant_id))["vms"]["items"] if v["name"] == "web2"
        )
        ordered = gql.data(POWER, s=web2["sightings"][0]["id"], a="power_off")["powerVm"]

        def finished() -> dict[str, Any] | None:
            c = gql.data(COMMAND, id=ordered["id"])["command"]
            return c if c["state"] in ("succeeded", "failed") else None

        command = eventually(finished, timeout=30, what="the refused command to finish")
        assert command["state"] == "failed"
        assert command["resultCode"] == "refused_by_safety_net"
        explained = json.loads(agent.cli("vm", "explain", "web2", "--json").stdout)
        assert explained["power_state"] == "on"

        # The agent's trail reaches the cloud's audit log: its refusal and its two actions.
        def trail() -> list[dict[str, Any]] | None:
            found = [
                a for a in _audit(gql, str(world.tenant_id)) if a["action"] == "agent.vm.power"
            ]
            return found if any(a["outcome"] == "refused" for a in found) else None

        powered = eventually(trail, timeout=30, what="the agent's audit trail in the cloud")
        refusal = next(a for a in powered if a["outcome"] == "refused")
        assert refusal["target"].endswith("/lab/web2") or "web2" in refusal["detail"]["reason"]
        assert refusal["detail"]["code"] == "refused_by_safety_net"
        assert refusal["detail"]["source"] == "cloud"
        assert sum(a["outcome"] == "ok" for a in powered) == 2
    finally:
        if agent.proc is not None:
            agent.stop()
        cloud.stop()
