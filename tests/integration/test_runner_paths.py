"""The runner's other ways out, against a real cloud in this process: a command no module
handles, one whose time-to-live ran out while the agent was down, one interrupted whose
module cannot tell whether it happened, and a handler that raises."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from dockyard.agent.errors import FlowModeForbids, LinkUnavailable
from dockyard.agent.modules.base import Outcome
from dockyard.agent.protocol import Ack, AckResponse, CommandEntry, FlowMode
from dockyard.agent.vault.repository import Repository, Source
from dockyard.cloud.domain import commands
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import Command, JobEvent, Tenant

from ..factories import World, enrolment_secret, make_world, system
from ..procs import Agent, Cloud, eventually
from ..vault.conftest import FAST, PASS, SMALL, vm_like
from .test_runner_time import docked, open_runner

__all__ = ["docked"]  # the fixture, shared


def _issue(pg: Database, world: World, agent_id: uuid.UUID, name: str, **kw: object) -> uuid.UUID:
    with system(pg, world.tenant_id) as ctx:
        return commands.issue(ctx, agent_id, name, {"text": name}, **kw).id  # type: ignore[arg-type]


def _cloud_state(pg: Database, world: World, command_id: uuid.UUID) -> tuple[str, str | None]:
    with system(pg, world.tenant_id) as ctx:
        row = ctx.session.get(Command, command_id)
        assert row is not None
        return row.state, row.result_code


def test_unknown_expired_interrupted_and_raising_commands(
    docked: tuple[Agent, uuid.UUID, World],
    pg: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    agent, agent_id, world = docked
    runner = open_runner(agent, tmp_path / "clock", timedelta(0), monkeypatch)
    try:
        # No module handles it: rejected, and the cloud is told so.
        unknown = _issue(pg, world, agent_id, "nosuch.thing")

        # A handler that raises something other than CommandFailed (a bug in a module):
        # no module here does on purpose, so the test gives noop.echo one that does.
        def broken(command: CommandEntry) -> Outcome:
            raise RuntimeError("a bug")

        runner._handlers["noop.echo"] = (runner.modules["noop"], broken)
        raising = _issue(pg, world, agent_id, "noop.echo")
        runner.poll_once(wait=0)
        assert _cloud_state(pg, world, unknown) == ("failed", "unknown_command")
        journal = runner.journal.get(str(unknown))
        assert journal is not None
        assert (journal.state, journal.result_code) == ("rejected", "unknown_command")
        assert _cloud_state(pg, world, raising) == ("failed", "agent_error")
        journal = runner.journal.get(str(raising))
        assert journal is not None
        assert journal.detail == "RuntimeError: a bug"

        # Delivered, journaled, then the agent died before the effect (as after a kill -9 at
        # after_journal_start) and stayed down past the command's time-to-live.
        lapsing = _issue(pg, world, agent_id, "noop.append", ttl=timedelta(seconds=2))
        interrupted = _issue(pg, world, agent_id, "noop.report")
        answer = runner.link.poll(runner.state.link("default").last_seq, 0)  # type: ignore[union-attr]
        by_id = {e.command_id: e for e in answer.entries if isinstance(e, CommandEntry)}
        for cid in (lapsing, interrupted):
            entry = by_id[cid]
            runner.journal.start(
                "default", str(cid), entry.seq, str(entry.job_id), entry.name, entry.args
            )
        expires = by_id[lapsing].expires_at
        eventually(lambda: datetime.now(UTC) > expires + timedelta(seconds=1), timeout=10)
        runner.poll_once(wait=0)  # delivered again, as after a restart
        journal = runner.journal.get(str(lapsing))
        assert journal is not None
        assert (journal.state, journal.result_code) == ("rejected", "expired")
        assert not (agent.state / "modules" / "noop" / "lines.log").exists(), "never ran"
        assert _cloud_state(pg, world, lapsing) == ("failed", "expired")
        # noop.report cannot say whether it ran: failed, never run twice.
        journal = runner.journal.get(str(interrupted))
        assert journal is not None
        assert (journal.state, journal.result_code) == ("failed", "interrupted")
        assert _cloud_state(pg, world, interrupted) == ("failed", "interrupted")
    finally:
        runner.state.close()


def test_in_config_mode_an_undeclared_code_goes_up_as_undeclared(
    docked: tuple[Agent, uuid.UUID, World],
    pg: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`noop.fail` fails with the code its arguments name: a file name here, which config
    mode's closed vocabulary refuses, so the runner sends `undeclared` and the cloud takes it;
    a declared code goes up as it is."""
    agent, agent_id, world = docked
    with system(pg, world.tenant_id) as ctx:
        tenant = ctx.session.get(Tenant, world.tenant_id)
        assert tenant is not None
        tenant.flow_mode = "config"
    runner = open_runner(agent, tmp_path / "clock", timedelta(0), monkeypatch)
    try:
        runner.poll_once(wait=0)  # learns the mode
        with system(pg, world.tenant_id) as ctx:
            named = commands.issue(ctx, agent_id, "noop.fail", {"code": "payroll-db.qcow2"}).id
            declared = commands.issue(ctx, agent_id, "noop.fail", {}).id
        runner.poll_once(wait=0)
        assert _cloud_state(pg, world, named) == ("failed", "undeclared")
        assert _cloud_state(pg, world, declared) == ("failed", "requested_failure")
    finally:
        runner.state.close()


def test_a_poll_answer_is_acked_in_one_request_and_again_after_a_lost_ack(
    docked: tuple[Agent, uuid.UUID, World],
    pg: Database,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three commands in one answer, one ack request carrying all three; when that request
    is lost, the sequence stays put, the cloud delivers them again, the journal keeps
    each effect once, and the next answer's ack lands."""
    agent, agent_id, world = docked
    runner = open_runner(agent, tmp_path / "clock", timedelta(0), monkeypatch)
    try:
        issued = [_issue(pg, world, agent_id, name) for name in ("noop.append", "noop.echo")]
        issued.append(_issue(pg, world, agent_id, "nosuch.thing"))
        link = runner.link
        assert link is not None
        real_ack = link.ack
        requests: list[list[int]] = []

        def lost(acks: list[Ack]) -> AckResponse:
            requests.append([a.seq for a in acks])
            raise LinkUnavailable("the ack was lost on the way")

        monkeypatch.setattr(link, "ack", lost)
        before = runner.state.link("default").last_seq  # type: ignore[union-attr]
        with pytest.raises(LinkUnavailable):
            runner.poll_once(wait=0)
        assert len(requests) == 1
        assert len(requests[0]) == 3, "every entry of the answer in one request"
        assert runner.state.link("default").last_seq == before, "not past unacked entries"

        def counted(acks: list[Ack]) -> AckResponse:
            requests.append([a.seq for a in acks])
            return real_ack(acks)

        monkeypatch.setattr(link, "ack", counted)
        runner.poll_once(wait=0)  # delivered again
        assert requests[1] == requests[0]
        assert runner.state.link("default").last_seq >= max(requests[0])
        lines = (agent.state / "modules" / "noop" / "lines.log").read_text()
        assert lines.count("noop.append") == 1, "the effect happened once"
        states = [_cloud_state(pg, world, c)[0] for c in issued]
        assert states == ["succeeded", "succeeded", "failed"]
        with system(pg, world.tenant_id) as ctx:
            rows = [ctx.session.get(Command, c) for c in issued]
            assert all(row is not None and row.acked_at is not None for row in rows)
    finally:
        runner.state.close()


def test_a_module_reports_progress_and_config_mode_keeps_its_words(
    cloud: Cloud, pg: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handler tells how far its job has come through its context (ModuleContext.progress):
    a job event the cloud stores; in config mode without the words."""
    world = make_world(pg)
    agent = Agent(tmp_path / "agent")
    agent.dock(cloud.url, enrolment_secret(world), "--max-flow", "metadata")
    agent_id = uuid.UUID(json.loads(agent.cli("status", "--json").stdout)["links"][0]["agent_id"])
    runner = open_runner(agent, tmp_path / "clock", timedelta(0), monkeypatch)
    noop = runner.modules["noop"]

    def halfway(command: CommandEntry) -> Outcome:
        noop.ctx.progress(command.job_id, 0.5, "copying disk 1 of 2")
        return Outcome()

    runner._handlers["noop.echo"] = (noop, halfway)
    try:
        events: dict[str, list[tuple[float | None, str | None]]] = {}
        for mode in ("metadata", "config"):
            with system(pg, world.tenant_id) as ctx:
                tenant = ctx.session.get(Tenant, world.tenant_id)
                assert tenant is not None
                tenant.flow_mode = mode
            runner.poll_once(wait=0)  # learns the mode
            cid = _issue(pg, world, agent_id, "noop.echo")
            runner.poll_once(wait=0)
            with system(pg, world.tenant_id) as ctx:
                command = ctx.session.get(Command, cid)
                assert command is not None
                rows = ctx.session.scalars(
                    select(JobEvent).where(
                        JobEvent.job_id == command.job_id, JobEvent.kind == "progress"
                    )
                )
                events[mode] = [(r.progress, r.detail) for r in rows]
        assert events == {
            "metadata": [(0.5, "copying disk 1 of 2")],
            "config": [(0.5, None)],
        }
    finally:
        runner.state.close()


def test_a_module_gets_cloud_storage_through_its_context_in_data_mode_only(
    cloud: Cloud, pg: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ModuleContext.vault(name): a repository on the tenant's cloud-managed storage, the
    module never handed the link; refused outside flow mode `data`."""
    world = make_world(pg, flow=FlowMode.DATA)
    agent = Agent(tmp_path / "agent")
    agent.dock(cloud.url, enrolment_secret(world), "--max-flow", "data")
    runner = open_runner(agent, tmp_path / "clock", timedelta(0), monkeypatch)
    ctx = runner.modules["noop"].ctx
    try:
        runner.poll_once(wait=0)
        data = vm_like(300_000, 3)
        repo = Repository.init(ctx.vault("noop-scratch"), PASS, params=SMALL, cost=FAST)
        snap, _ = repo.store([Source("a.img", lambda: io.BytesIO(data), len(data))])
        out = io.BytesIO()
        Repository.open(ctx.vault("noop-scratch"), passphrase=PASS).restore_stream(
            snap.id, "a.img", out
        )
        assert out.getvalue() == data
        with system(pg, world.tenant_id) as db:
            tenant = db.session.get(Tenant, world.tenant_id)
            assert tenant is not None
            tenant.flow_mode = "metadata"
        runner.poll_once(wait=0)
        with pytest.raises(FlowModeForbids, match="keeps data on this host"):
            ctx.vault("noop-scratch")
    finally:
        runner.state.close()
