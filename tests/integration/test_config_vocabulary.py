"""Config mode's closed vocabulary over real HTTP (uvicorn on PostgreSQL): names sent as ack
codes, job event codes and count keys are refused with 403, stored nowhere and audited;
declared codes pass; in metadata mode any `Code` passes, as before."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
from sqlalchemy import select

from dockyard.cloud.domain import commands
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import Agent, AuditRecord, Command, JobEvent

from ..factories import system
from ..procs import Cloud
from .test_agent_api import Enrolled, H

NAMES = ["salaries-2024.xlsx", "payroll-db.qcow2", "db01.corp.example.com", "alice.smith"]
"""A file name, a disk image, a host name and a person's name: each a valid `Code`."""


def _setup(cloud: Cloud, pg: Database, tmp_path: Path, mode: str) -> tuple[Enrolled, str, dict]:
    agent = Enrolled(cloud, pg, tmp_path, max_flow=mode)
    with system(pg, agent.world.tenant_id) as ctx:
        job = commands.issue(ctx, uuid.UUID(agent.id), "noop.echo", {}).job_id
    auth = H | {"Authorization": f"Bearer {agent.access()}"}
    return agent, f"{cloud.url}/agent/v1/jobs/{job}/events", auth


def _event(code: str | None = None, counts: dict[str, int] | None = None) -> dict[str, object]:
    event: dict[str, object] = {"kind": "succeeded", "at": "2026-01-01T00:00:00Z"}
    if code is not None:
        event["code"] = code
    return event | {"counts": counts or {}}


def test_names_as_codes_and_keys_are_refused_in_config_mode_and_audited(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    agent, events_url, auth = _setup(cloud, pg, tmp_path, "config")
    acks_url = f"{cloud.url}/agent/v1/acks"
    sent = 0
    for name in NAMES:
        for url, body in (
            (acks_url, {"acks": [{"seq": 1, "outcome": "rejected", "code": name}]}),
            (events_url, {"events": [_event(code=name)]}),
            (events_url, {"events": [_event(counts={name: 1})]}),
        ):
            r = httpx.post(url, json=body, headers=auth)
            assert (r.status_code, r.json()["error"]) == (403, "flow_mode_forbids"), (name, url)
            assert name not in r.text
            sent += 1
    # vm's code on a noop job: declared, but not by the command's module
    r = httpx.post(events_url, json={"events": [_event(code="not_due")]}, headers=auth)
    assert r.status_code == 403
    sent += 1
    with system(pg, agent.world.tenant_id) as ctx:
        assert ctx.session.scalars(select(JobEvent)).all() == []
        command = ctx.session.scalars(select(Command)).one()
        assert command.result_code is None
        assert command.state not in ("rejected", "succeeded")
        assert ctx.session.get(Agent, uuid.UUID(agent.id)).acked_seq == 0  # type: ignore[union-attr]
        refused = ctx.session.scalars(
            select(AuditRecord).where(AuditRecord.outcome == "refused")
        ).all()
        assert sorted(a.action for a in refused) == sorted(
            ["upload.acks"] * len(NAMES) + ["upload.job_events"] * (2 * len(NAMES) + 1)
        )
        assert not any(n in str(a.detail) for a in refused for n in NAMES)
    assert sent == len(refused)

    # declared codes and count keys pass
    r = httpx.post(acks_url, json={"acks": [{"seq": 1, "code": "ok"}]}, headers=auth)
    assert r.status_code == 200, r.text
    body = {"events": [_event(code="requested_failure", counts={"lines": 2, "records": 1})]}
    r = httpx.post(events_url, json=body, headers=auth)
    assert r.status_code == 200, r.text
    with system(pg, agent.world.tenant_id) as ctx:
        stored = ctx.session.scalars(select(JobEvent)).one()
        assert (stored.code, stored.counts) == ("requested_failure", {"lines": 2, "records": 1})


def test_metadata_mode_keeps_any_code(cloud: Cloud, pg: Database, tmp_path: Path) -> None:
    agent, events_url, auth = _setup(cloud, pg, tmp_path, "metadata")
    name = NAMES[0]
    r = httpx.post(
        f"{cloud.url}/agent/v1/acks",
        json={"acks": [{"seq": 1, "outcome": "rejected", "code": name}]},
        headers=auth,
    )
    assert r.status_code == 200, r.text
    body = {"events": [_event(code=name, counts={NAMES[3]: 1})]}
    r = httpx.post(events_url, json=body, headers=auth)
    assert r.status_code == 200, r.text
    with system(pg, agent.world.tenant_id) as ctx:
        stored = ctx.session.scalars(select(JobEvent)).one()
        assert (stored.code, stored.counts) == (name, {NAMES[3]: 1})


def _audit_batch(*records: dict[str, object]) -> dict[str, object]:
    return {
        "batch_id": str(uuid.uuid4()),
        "module": "vm",
        "kind": "vm.audit",
        "records": list(records),
    }


def test_config_mode_lets_up_the_vm_audit_trail_as_codes_only(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    """A refusal on the agent reaches the tenant's log in config mode, without the VM: an
    entry that names a target, a reason or an undeclared code is refused whole."""
    agent, _, auth = _setup(cloud, pg, tmp_path, "config")
    url = f"{cloud.url}/agent/v1/metadata"
    codes_only = {
        "id": 7,
        "at": "2026-04-02T12:00:00+00:00",
        "action": "vm.power",
        "outcome": "refused",
        "target": None,
        "detail": {"code": "over_budget", "source": "notice", "budget": 1, "in_scope": 10},
    }
    named = [
        codes_only | {"target": "lab/db01.corp.example.com"},
        codes_only | {"detail": {"code": "over_budget", "reason": "payroll-db is held"}},
        codes_only | {"detail": {"code": NAMES[1]}},
        codes_only | {"detail": {"code": "over_budget", "source": NAMES[3]}},
        codes_only | {"action": NAMES[0]},
    ]
    for record in named:
        r = httpx.post(url, json=_audit_batch(codes_only | {"id": 8}, record), headers=auth)
        assert (r.status_code, r.json()["error"]) == (403, "flow_mode_forbids"), record
    r = httpx.post(url, json=_audit_batch(codes_only), headers=auth)
    assert r.status_code == 200, r.text
    with system(pg, agent.world.tenant_id) as ctx:
        rows = ctx.session.scalars(
            select(AuditRecord).where(AuditRecord.action == "agent.vm.power")
        ).all()
        assert [(a.outcome, a.target, a.detail["code"]) for a in rows] == [
            ("refused", agent.id, "over_budget")
        ]
        refused = ctx.session.scalars(
            select(AuditRecord).where(AuditRecord.outcome == "refused")
        ).all()
        assert not any(n in str(a.detail) for a in refused for n in NAMES)
