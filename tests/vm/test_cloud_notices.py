"""The cloud's side of notices, under its manual clock: mail through a real SMTP server,
skip and delay through signed single-use links, the command after the notice runs out."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from dockyard.agent import keys
from dockyard.agent import protocol as p
from dockyard.agent.protocol import links, vm
from dockyard.cloud import scheduler
from dockyard.cloud.app import build_services
from dockyard.cloud.domain import enrolment, jobs, metadata, policies
from dockyard.cloud.domain.clock import ManualClock
from dockyard.cloud.domain.errors import Invalid
from dockyard.cloud.modules.vm import notices as vm_notices
from dockyard.cloud.settings import Settings
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import AuditRecord, Command, VmDecision

from ..factories import enrolment_secret, make_world, system

START = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


def decision(name: str, owner: str | None) -> dict[str, Any]:
    return vm.Decision(
        decision_id=str(uuid.uuid4()),
        endpoint="vc",
        native_id=f"vm-{name}",
        vm_name=name,
        state=vm.IdleState.IDLE,
        window_start=START - timedelta(days=90),
        window_end=START,
        signals=[vm.Signal.CPU],
        reasons=["every sample stayed under the thresholds"],
        proposed_action=vm.PowerAction.SHUTDOWN,
        owner=owner,
        notice_hours=24,
    ).model_dump(mode="json")


@pytest.fixture
def setup(pg_url: str, pg: Database, tmp_path: Path, smtp: Any) -> Any:
    clock = ManualClock(START)
    settings = Settings(
        database_url=pg_url,
        data_dir=tmp_path,
        public_url="https://cloud.test",
        secret_key="x" * 40,
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
    )
    svc = build_services(settings, clock)
    world = make_world(pg, clock=clock)
    with system(pg, world.tenant_id, clock=clock) as ctx:
        agent = enrolment.enroll(
            ctx,
            p.EnrollRequest(
                token=enrolment_secret(world, clock=clock),
                public_key=keys.public_b64(keys.generate(tmp_path / "a.key")),
                host=p.HostFacts(hostname="h"),
                max_flow=p.FlowMode.METADATA,
            ),
        )
        agent_id = agent.id
    yield svc, clock, world, agent_id
    svc.db.dispose()


def propose(pg: Database, world: Any, agent_id: uuid.UUID, clock: Any, *records: Any) -> None:
    with system(pg, world.tenant_id, clock=clock) as ctx:
        metadata.accept(
            ctx,
            agent_id,
            p.MetadataBatch(
                batch_id=uuid.uuid4(), module="vm", kind="vm.decision", records=list(records)
            ),
            100,
        )


def test_notice_skip_delay_and_the_command_after(setup: Any, pg: Database, smtp: Any) -> None:
    svc, clock, world, agent_id = setup
    propose(
        pg,
        world,
        agent_id,
        clock,
        decision("web", "web@example.com"),
        decision("db", "db@example.com"),
        decision("tmp", "tmp@example.com"),
        decision("orphan", None),
    )
    done = scheduler.run(svc, "vm.notices")
    assert done == {"notified": 3, "failed": 1}
    mails = {m["To"]: m.get_content() for m in smtp.wait(3)}
    tokens = {}
    for to, body in mails.items():
        found = re.findall(r"https://cloud\.test/vm/notices/answer\?t=(\S+)", body)
        tokens[to] = {"skip": found[0], "delay": found[1]}
    key = vm_notices.link_key(svc.settings.signing_secret())

    def answer(token: str) -> str:
        with svc.db.transaction() as session:
            tenant, claims = vm_notices.find_for_link(session, key, token, clock)
        with system(pg, tenant, clock=clock) as ctx:
            return vm_notices.answer(ctx, claims)

    assert "stays on" in answer(tokens["web@example.com"]["skip"])
    with pytest.raises(links.BadLink):
        answer(tokens["web@example.com"]["skip"])  # replayed
    with pytest.raises(links.BadLink, match="not issued by us"):
        answer(tokens["db@example.com"]["delay"][:-3] + "AAA")  # forged
    assert "not be shut down before" in answer(tokens["db@example.com"]["delay"])

    clock.advance(timedelta(hours=25))
    assert scheduler.run(svc, "vm.notices") == {"commanded": 1}  # tmp only
    clock.advance(timedelta(days=7))
    assert scheduler.run(svc, "vm.notices") == {"commanded": 1}  # db, a week late
    clock.advance(timedelta(days=2))
    with pytest.raises(links.BadLink, match="expired"):
        answer(tokens["tmp@example.com"]["skip"])

    with system(pg, world.tenant_id, clock=clock) as ctx:
        rows = {d.vm_name: d for d in ctx.session.scalars(select(VmDecision))}
        assert {n: d.status for n, d in rows.items()} == {
            "web": "skipped",
            "db": "commanded",
            "tmp": "commanded",
            "orphan": "failed",
        }
        assert rows["orphan"].error == "no owner and no default contact"
        issued = {
            c.name: c
            for c in ctx.session.scalars(select(Command).where(Command.agent_id == agent_id))
        }
        assert issued["vm.resolve"].args["outcome"] == "skipped"
        assert issued["vm.power"].args["action"] == "shutdown"


def _agent_answers(
    pg: Database, world: Any, agent_id: uuid.UUID, clock: Any, name: str, code: str | None
) -> None:
    """The agent's result for the decision's `vm.power`, as its job events would carry it
    (the command is handed out first, as a poll would)."""
    with system(pg, world.tenant_id, clock=clock) as ctx:
        row = ctx.session.scalars(select(VmDecision).where(VmDecision.vm_name == name)).one()
        command = ctx.session.get(Command, row.command_id)
        assert command is not None
        command.state = "sent"
        kind = p.JobEventKind.FAILED if code else p.JobEventKind.SUCCEEDED
        jobs.report(
            ctx,
            agent_id,
            command.job_id,
            [p.JobEvent(kind=kind, at=clock.now(), code=code, detail=f"{name}: {code or 'off'}")],
        )


def test_the_decision_takes_the_agents_result_and_a_held_one_goes_on_after_approval(
    setup: Any, pg: Database, smtp: Any
) -> None:
    svc, clock, world, agent_id = setup
    # Brought to the present: a cloud process of another test sweeps this database by the
    # real clock, and would expire commands issued in May.
    clock.advance(datetime.now(UTC) - START)
    with system(pg, world.tenant_id, clock=clock) as ctx:  # the agent's policy names a contact
        policy = policies.create(
            ctx,
            world.tenant_id,
            "idle",
            vm.POLICY_KIND,
            {"idle_days": 30, "default_contact": "ops@example.com"},
        )
        policies.assign(ctx, policy.id, "site", world.site_id)
    propose(
        pg,
        world,
        agent_id,
        clock,
        decision("a", "a@example.com"),
        decision("b", "b@example.com"),
        decision("c", "c@example.com"),
    )

    def rows() -> dict[str, VmDecision]:
        with system(pg, world.tenant_id, clock=clock) as ctx:
            found = {d.vm_name or "": d for d in ctx.session.scalars(select(VmDecision))}
            ctx.session.expunge_all()
            return found

    def statuses() -> dict[str, str]:
        """This tenant's only: the loop also advances other tests' tenants."""
        scheduler.run(svc, "vm.notices")
        return {name: d.status for name, d in rows().items()}

    assert statuses() == {"a": "notified", "b": "notified", "c": "notified"}
    clock.advance(timedelta(hours=25))
    assert statuses() == {"a": "commanded", "b": "commanded", "c": "commanded"}
    assert statuses() == {"a": "commanded", "b": "commanded", "c": "commanded"}, (
        "nothing to settle before the agent answers"
    )
    commanded = rows()["a"]
    assert commanded.due_at is not None
    with system(pg, world.tenant_id, clock=clock) as ctx:
        power = ctx.session.get(Command, commanded.command_id)
        assert power is not None
        assert power.args["not_before"] == commanded.due_at.isoformat(), "the mail's time"

    _agent_answers(pg, world, agent_id, clock, "a", None)
    _agent_answers(pg, world, agent_id, clock, "b", "over_budget")
    _agent_answers(pg, world, agent_id, clock, "c", "refused_by_safety_net")
    assert statuses() == {"a": "done", "b": "held", "c": "failed"}

    def held_mails() -> list[Any]:
        return [m for m in smtp.messages if "wait for an approval" in m["Subject"]]

    smtp.wait(4)
    assert [m["To"] for m in held_mails()] == ["ops@example.com"], "the policy's contact"

    settled = rows()
    assert settled["a"].error is None
    assert settled["b"].error == "over_budget: b: over_budget"
    assert settled["c"].error == "refused_by_safety_net: c: refused_by_safety_net"
    first_b = settled["b"].command_id

    with system(pg, world.tenant_id, clock=clock) as ctx:
        with pytest.raises(Invalid, match="between 1 and 1000"):
            vm_notices.approve(ctx, agent_id, 0)
        approval, released = vm_notices.approve(ctx, agent_id, 5)
    assert released == 1, "only the held one goes again; the refused one stays refused"
    assert statuses() == {"a": "done", "b": "commanded", "c": "failed"}
    again = rows()["b"]
    assert again.command_id not in (None, first_b), "a command of its own after the approval"
    with system(pg, world.tenant_id, clock=clock) as ctx:
        issued = ctx.session.scalars(
            select(Command).where(Command.agent_id == agent_id).order_by(Command.seq)
        ).all()
        order = [c.id for c in issued]
        assert issued[order.index(approval)].name == "vm.approve"
        assert order.index(approval) < order.index(again.command_id)
        by_id = {c.id: c for c in issued}
        stated = by_id[first_b].args["not_before"]
        # Let go at the approval's moment, it still states the mail's time: the agent's
        # estimate of the cloud's clock may trail the approval, never the mail.
        assert by_id[again.command_id].args["not_before"] == stated
        audit_rows = ctx.session.scalars(
            select(AuditRecord).where(AuditRecord.action.like("vm.decision.%"))
        ).all()
        assert sorted(r.action for r in audit_rows) == [
            "vm.decision.done",
            "vm.decision.failed",
            "vm.decision.held",
        ]
    # Held again the same day (the approval went to another action): no second mail.
    _agent_answers(pg, world, agent_id, clock, "b", "over_budget")
    assert statuses() == {"a": "done", "b": "held", "c": "failed"}
    assert len(held_mails()) == 1, "told once a day"
    clock.advance(timedelta(hours=23))
    assert statuses()["b"] == "held", "inside the budget's window it waits for an approval"
    clock.advance(timedelta(hours=2))
    assert statuses()["b"] == "commanded", "a window later it is tried again by itself"
    retried = rows()["b"]
    assert retried.command_id not in (None, again.command_id)
    with system(pg, world.tenant_id, clock=clock) as ctx:
        resent = ctx.session.get(Command, retried.command_id)
        assert resent is not None
        assert resent.args["not_before"] == stated, "a window later too"
        assert ctx.session.scalars(
            select(AuditRecord.target).where(AuditRecord.action == "vm.decision.retried")
        ).all() == [str(retried.id)]
    _agent_answers(pg, world, agent_id, clock, "b", "over_budget")
    assert statuses()["b"] == "held"
    with system(pg, world.tenant_id, clock=clock) as ctx:
        vm_notices.approve(ctx, agent_id, 1)
    assert statuses() == {"a": "done", "b": "commanded", "c": "failed"}
    _agent_answers(pg, world, agent_id, clock, "b", None)
    assert statuses() == {"a": "done", "b": "done", "c": "failed"}


def test_the_agents_audit_trail_lands_in_the_tenants_log_and_a_bad_entry_stores_nothing(
    setup: Any, pg: Database
) -> None:
    _, clock, world, agent_id = setup
    trail = [
        {
            "id": 1,
            "at": START.isoformat(),
            "action": "vm.power",
            "target": "vc/vm-web",
            "outcome": "refused",
            "detail": {"code": "over_budget", "action": "shutdown", "source": "notice"},
        },
        {
            "id": 2,
            "at": START.isoformat(),
            "action": "vm.approve",
            "target": None,
            "outcome": "ok",
            "detail": {"count": 2, "source": "shell"},
        },
    ]

    def send(records: list[dict[str, Any]]) -> None:
        with system(pg, world.tenant_id, clock=clock) as ctx:
            metadata.accept(
                ctx,
                agent_id,
                p.MetadataBatch(
                    batch_id=uuid.uuid4(), module="vm", kind="vm.audit", records=records
                ),
                100,
            )

    send(trail)
    with pytest.raises(Invalid, match="names no known action"):
        send([{**trail[0], "action": "vm.delete_everything"}])
    with system(pg, world.tenant_id, clock=clock) as ctx:
        found = ctx.session.scalars(
            select(AuditRecord).where(AuditRecord.action.like("agent.vm.%"))
        ).all()
        by_action = {r.action: r for r in found}
        assert set(by_action) == {"agent.vm.power", "agent.vm.approve"}
        power = by_action["agent.vm.power"]
        assert (power.outcome, power.target) == ("refused", f"{agent_id}/vc/vm-web")
        assert power.detail["code"] == "over_budget"
        assert power.detail["agent_action"] == "shutdown"
        assert power.detail["agent_at"] == START.isoformat()
