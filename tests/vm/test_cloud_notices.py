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
from dockyard.cloud.domain import enrolment, metadata, vm_notices
from dockyard.cloud.domain.clock import ManualClock
from dockyard.cloud.settings import Settings
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import Command, VmDecision

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
    done = scheduler.run_vm_notices(svc)
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
    assert scheduler.run_vm_notices(svc) == {"commanded": 1}  # tmp only
    clock.advance(timedelta(days=7))
    assert scheduler.run_vm_notices(svc) == {"commanded": 1}  # db, a week late
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
