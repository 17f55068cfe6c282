"""Commands through an agent's sequence: delivery states, time-to-live, timeouts,
idempotency, and job events only from the job's own agent."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, text

from dockyard.agent import keys
from dockyard.agent.protocol import (
    Ack,
    AckOutcome,
    EnrollRequest,
    FlowMode,
    HostFacts,
    JobEvent,
    JobEventKind,
    MetadataBatch,
    ModuleInfo,
)
from dockyard.cloud.batching import ack_writer
from dockyard.cloud.domain import (
    agents,
    commands,
    delivery,
    enrolment,
    jobs,
    metadata,
    policies,
    tenants,
)
from dockyard.cloud.domain.clock import ManualClock, SystemClock
from dockyard.cloud.domain.context import Ctx
from dockyard.cloud.domain.errors import FlowModeForbids, Invalid, NotFound, Unauthenticated
from dockyard.cloud.domain.principal import Principal
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import AuditRecord, Command
from dockyard.cloud.store.tenancy import unscoped

from ..factories import World, enrolment_secret, make_world, system


def new_agent(world: World, tmp_path, clock) -> uuid.UUID:
    key = keys.generate(tmp_path / f"{uuid.uuid4().hex}.key")
    req = EnrollRequest(
        token=enrolment_secret(world, clock=clock),
        public_key=keys.public_b64(key),
        host=HostFacts(hostname="h"),
        max_flow=FlowMode.DATA,
        modules=[ModuleInfo(name="noop", version="1")],
    )
    with world.db.transaction() as session:
        return enrolment.enroll(Ctx(session, Principal("anonymous", None), clock), req).id


def agent_ctx(world: World, agent_id: uuid.UUID, clock):
    class _Ctx:
        def __enter__(self) -> Ctx:
            self.cm = world.db.transaction([world.tenant_id])
            session = self.cm.__enter__()
            return Ctx(session, Principal.agent(agent_id, world.tenant_id), clock)

        def __exit__(self, *exc: object) -> None:
            self.cm.__exit__(*exc)

    return _Ctx()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(SystemClock().now())


def test_command_life_from_queued_to_succeeded(db: Database, tmp_path, clock) -> None:
    world = make_world(db, clock=clock)
    agent_id = new_agent(world, tmp_path, clock)
    with system(db, world.tenant_id, clock=clock) as ctx:
        command = commands.issue(ctx, agent_id, "noop.append", {"text": "x"})
        assert command.state == "queued"
        seq, job_id = command.seq, command.job_id
    with agent_ctx(world, agent_id, clock) as ctx:
        view = delivery.poll_view(ctx, agent_id, after=0)
        assert [e.seq for e in view.entries] == [seq]
        assert view.features["noop"]  # enterprise plan, metadata mode: features unlocked
    with agent_ctx(world, agent_id, clock) as ctx:
        assert delivery.poll_view(ctx, agent_id, after=seq).entries == []
        delivery.ack(ctx, agent_id, [Ack(seq=seq)])
        jobs.report(
            ctx,
            agent_id,
            job_id,
            [
                JobEvent(kind=JobEventKind.STARTED, at=clock.now()),
                JobEvent(kind=JobEventKind.SUCCEEDED, at=clock.now(), code="ok"),
            ],
        )
    with system(db, world.tenant_id) as ctx:
        done = ctx.session.scalar(
            select(Command).where(Command.seq == seq, Command.agent_id == agent_id)
        )
        assert done is not None
        assert (done.state, done.result_code) == ("succeeded", "ok")
        assert done.acked_at is not None
        assert done.sent_at is not None


def test_acks_move_only_sent_commands_and_keep_the_first_ack_time(
    db: Database, tmp_path, clock
) -> None:
    """An ack accepts or rejects what was handed out; a job event that came first (the
    command is running) is never undone by it, and a repeated ack changes nothing."""
    world = make_world(db, clock=clock)
    agent_id = new_agent(world, tmp_path, clock)
    with system(db, world.tenant_id, clock=clock) as ctx:
        issued = [commands.issue(ctx, agent_id, "noop.echo", {"n": i}) for i in range(3)]
    with agent_ctx(world, agent_id, clock) as ctx:
        assert len(delivery.poll_view(ctx, agent_id, after=0).entries) == 3
        jobs.report(
            ctx, agent_id, issued[2].job_id, [JobEvent(kind=JobEventKind.STARTED, at=clock.now())]
        )
    first_ack = clock.now()
    acks = [
        Ack(seq=issued[0].seq),
        Ack(seq=issued[1].seq, outcome=AckOutcome.REJECTED, code="unknown_command"),
        Ack(seq=issued[2].seq),
    ]
    with agent_ctx(world, agent_id, clock) as ctx:
        assert delivery.ack(ctx, agent_id, acks) == issued[2].seq
    clock.advance(timedelta(seconds=5))
    with agent_ctx(world, agent_id, clock) as ctx:
        assert delivery.ack(ctx, agent_id, acks[:1]) == issued[2].seq
    with system(db, world.tenant_id) as ctx:
        stored = {c.id: c for c in ctx.session.scalars(select(Command))}
        states = [(stored[c.id].state, stored[c.id].result_code) for c in issued]
        assert states == [("acked", None), ("rejected", "unknown_command"), ("running", None)]
        assert [stored[c.id].acked_at for c in issued] == [first_ack] * 3
        assert stored[issued[1].id].finished_at == first_ack
        assert stored[issued[0].id].finished_at is None
        assert agents.get(ctx, agent_id).acked_seq == issued[2].seq


def test_undelivered_command_expires_and_is_never_delivered_after(
    db: Database, tmp_path, clock
) -> None:
    world = make_world(db, clock=clock)
    agent_id = new_agent(world, tmp_path, clock)
    with system(db, world.tenant_id, clock=clock) as ctx:
        lapsing = commands.issue(
            ctx, agent_id, "noop.append", {"text": "late"}, ttl=timedelta(seconds=10)
        )
        lapsing_id = lapsing.id
    clock.advance(timedelta(seconds=11))
    with agent_ctx(world, agent_id, clock) as ctx:
        view = delivery.poll_view(ctx, agent_id, after=0)
        assert view.entries == []
        assert view.last_seq == lapsing.seq  # the agent may move past it
    with system(db, world.tenant_id) as ctx:
        assert ctx.session.get(Command, lapsing_id).state == "expired"  # type: ignore[union-attr]


def test_sweeper_expires_and_times_out(db: Database, tmp_path, clock) -> None:
    world = make_world(db, clock=clock)
    agent_id = new_agent(world, tmp_path, clock)
    with system(db, world.tenant_id, clock=clock) as ctx:
        never = commands.issue(ctx, agent_id, "noop.append", {}, ttl=timedelta(seconds=5)).id
    with agent_ctx(world, agent_id, clock) as ctx:
        pass
    with system(db, world.tenant_id, clock=clock) as ctx:
        sent = commands.issue(ctx, agent_id, "noop.append", {}, timeout=timedelta(seconds=30))
        sent_seq, sent_id = sent.seq, sent.id
    # deliver only the second: the first lapses unseen
    clock.advance(timedelta(seconds=6))
    with agent_ctx(world, agent_id, clock) as ctx:
        view = delivery.poll_view(ctx, agent_id, after=0)
        assert [e.seq for e in view.entries] == [sent_seq]
    clock.advance(timedelta(seconds=31))
    with db.transaction() as session:
        commands.sweep(session, clock)
    with system(db, world.tenant_id) as ctx:
        assert ctx.session.get(Command, never).state == "expired"  # type: ignore[union-attr]
        assert ctx.session.get(Command, sent_id).state == "timed_out"  # type: ignore[union-attr]


def test_idempotency_key_returns_the_first_command(db: Database, tmp_path, clock) -> None:
    world = make_world(db, clock=clock)
    agent_id = new_agent(world, tmp_path, clock)
    with system(db, world.tenant_id, clock=clock) as ctx:
        a = commands.issue(ctx, agent_id, "noop.echo", {"n": 1}, idempotency_key="k-1")
        b = commands.issue(ctx, agent_id, "noop.echo", {"n": 1}, idempotency_key="k-1")
        assert a.id == b.id
        with pytest.raises(Invalid, match="different command"):
            commands.issue(ctx, agent_id, "noop.echo", {"n": 2}, idempotency_key="k-1")
        with pytest.raises(Invalid, match="module.action"):
            commands.issue(ctx, agent_id, "rm -rf", {})
        with pytest.raises(Invalid, match="module.action"):  # `$` let a final newline pass
            commands.issue(ctx, agent_id, "noop.echo\n", {})


def test_job_events_only_from_the_jobs_agent(db: Database, tmp_path, clock) -> None:
    world = make_world(db, clock=clock)
    mine, other = new_agent(world, tmp_path, clock), new_agent(world, tmp_path, clock)
    with system(db, world.tenant_id, clock=clock) as ctx:
        job_id = commands.issue(ctx, mine, "noop.echo", {}).job_id
    with agent_ctx(world, other, clock) as ctx, pytest.raises(NotFound):
        jobs.report(ctx, other, job_id, [JobEvent(kind=JobEventKind.FAILED, at=clock.now())])


def test_config_mode_refuses_free_text_and_metadata(db: Database, tmp_path, clock) -> None:
    world = make_world(db, flow=FlowMode.CONFIG, clock=clock)
    agent_id = new_agent(world, tmp_path, clock)
    with system(db, world.tenant_id, clock=clock) as ctx:
        job_id = commands.issue(ctx, agent_id, "noop.echo", {}).job_id
    with agent_ctx(world, agent_id, clock) as ctx, pytest.raises(FlowModeForbids):
        jobs.report(
            ctx,
            agent_id,
            job_id,
            [JobEvent(kind=JobEventKind.SUCCEEDED, at=clock.now(), detail="/srv/vm1")],
        )
    with agent_ctx(world, agent_id, clock) as ctx:
        jobs.report(
            ctx,
            agent_id,
            job_id,
            [JobEvent(kind=JobEventKind.SUCCEEDED, at=clock.now(), code="ok", counts={"lines": 3})],
        )
        batch = MetadataBatch(
            batch_id=uuid.uuid4(), module="noop", kind="status", records=[{"a": 1}]
        )
        with pytest.raises(FlowModeForbids):
            metadata.accept(ctx, agent_id, batch, 10)


def test_metadata_batches_are_idempotent_and_audited(db: Database, tmp_path, clock) -> None:
    world = make_world(db, flow=FlowMode.METADATA, clock=clock)
    agent_id = new_agent(world, tmp_path, clock)
    batch = MetadataBatch(
        batch_id=uuid.uuid4(), module="noop", kind="status", records=[{"a": 1}, {"a": 2}]
    )
    with agent_ctx(world, agent_id, clock) as ctx:
        assert metadata.accept(ctx, agent_id, batch, 42).duplicate is False
    with agent_ctx(world, agent_id, clock) as ctx:
        assert metadata.accept(ctx, agent_id, batch, 42).duplicate is True
    with system(db, world.tenant_id) as ctx:
        audits = ctx.session.scalars(
            select(AuditRecord).where(AuditRecord.action == "upload.metadata")
        ).all()
        assert [(a.detail["count"], a.detail["bytes"]) for a in audits] == [(2, 42)]


def test_policy_versions_reach_assigned_agents_once(db: Database, tmp_path, clock) -> None:
    world = make_world(db, clock=clock)
    agent_id = new_agent(world, tmp_path, clock)
    with system(db, world.tenant_id, clock=clock) as ctx:
        policy = policies.create(ctx, world.tenant_id, "greet", "noop", {"greeting": "hi"})
        policies.assign(ctx, policy.id, "site", world.site_id)
        policies.new_version(ctx, policy.id, {"greeting": "hello again"})
        with pytest.raises(Invalid, match="interval_s"):
            policies.new_version(ctx, policy.id, {"interval_s": -1})
        with pytest.raises(Invalid, match="unknown policy kind"):
            policies.create(ctx, world.tenant_id, "x", "nonsense", {})
    with agent_ctx(world, agent_id, clock) as ctx:
        view = delivery.poll_view(ctx, agent_id, after=0)
        docs = [(e.version, e.document["greeting"]) for e in view.entries]
        assert docs == [(1, "hi"), (2, "hello again")]
        assert delivery.poll_view(ctx, agent_id, after=view.last_seq).entries == []


def test_narrowing_flow_mode_is_seen_by_the_agent(db: Database, tmp_path, clock) -> None:
    world = make_world(db, flow=FlowMode.DATA, clock=clock)
    agent_id = new_agent(world, tmp_path, clock)
    with system(db, world.tenant_id, clock=clock) as ctx:
        tenants.set_site_flow(ctx, world.site_id, FlowMode.METADATA)
    with agent_ctx(world, agent_id, clock) as ctx:
        assert delivery.poll_view(ctx, agent_id, 0).mode is FlowMode.METADATA
    with system(db, world.tenant_id, clock=clock) as ctx:
        tenants.set_flow_mode(ctx, world.tenant_id, FlowMode.CONFIG)
    with agent_ctx(world, agent_id, clock) as ctx:
        view = delivery.poll_view(ctx, agent_id, 0)
        assert view.mode is FlowMode.CONFIG
        assert "catalog" not in view.features["noop"]  # a catalog needs metadata to flow


def test_one_command_to_many_agents_is_all_or_none(db: Database, tmp_path, clock) -> None:
    world = make_world(db, clock=clock)
    mine = [new_agent(world, tmp_path, clock) for _ in range(3)]
    other = make_world(db, clock=clock)
    foreign = new_agent(other, tmp_path, clock)

    with pytest.raises(NotFound), system(db, world.tenant_id, clock=clock) as ctx:
        commands.issue_many(ctx, [*mine, foreign], "noop.echo", {})
    with pytest.raises(Invalid), system(db, world.tenant_id, clock=clock) as ctx:
        commands.issue_many(ctx, [mine[0], mine[0]], "noop.echo", {})
    with system(db, world.tenant_id, clock=clock) as ctx:
        assert ctx.session.scalars(select(Command)).all() == [], "nothing issued"

    with system(db, world.tenant_id, clock=clock) as ctx:
        issued = commands.issue_many(ctx, mine, "noop.echo", {"x": 1})
        assert [c.agent_id for c in issued] == mine
        one = commands.issue(ctx, mine[0], "noop.append", {"line": "a"})
    for agent_id in mine:
        with agent_ctx(world, agent_id, clock) as ctx:
            view = delivery.poll_view(ctx, agent_id, 0)
            names = ["noop.echo", "noop.append"] if agent_id == mine[0] else ["noop.echo"]
            assert [e.name for e in view.entries if e.kind == "command"] == names
            assert next(e.args for e in view.entries if e.kind == "command") == {"x": 1}
    with system(db, world.tenant_id, clock=clock) as ctx:
        stored = {c.id: c for c in ctx.session.scalars(select(Command))}
        assert {c.id for c in [*issued, one]} == set(stored)
        assert stored[one.id].args == {"line": "a"}
        assert stored[one.id].job_id == one.job_id
        trail = ctx.session.scalars(
            select(AuditRecord).where(AuditRecord.action.like("command.%"))
        ).all()
        assert sorted((r.action, r.target, r.detail) for r in trail) == [
            ("command.issue", str(one.id), {"name": "noop.append"}),
            ("command.issue_many", None, {"name": "noop.echo", "agents": 3}),
        ]


def test_last_seen_times_are_stored_in_one_statement(db: Database, tmp_path, clock) -> None:
    world = make_world(db, clock=clock)
    ids = [new_agent(world, tmp_path, clock) for _ in range(3)]
    seen = {agent_id: clock.now() + timedelta(seconds=i) for i, agent_id in enumerate(ids)}
    with db.transaction() as session:
        assert agents.record_seen(session, seen | {uuid.uuid4(): clock.now()}) == set()
    with system(db, world.tenant_id) as ctx:
        for agent_id, at in seen.items():
            assert agents.get(ctx, agent_id).last_seen_at == at


def _issued_and_sent(world: World, agent_ids: list[uuid.UUID], clock) -> dict[uuid.UUID, int]:
    with system(world.db, world.tenant_id, clock=clock) as ctx:
        issued = commands.issue_many(ctx, agent_ids, "noop.echo", {})
        seqs = {c.agent_id: c.seq for c in issued}
    with system(world.db, world.tenant_id, clock=clock) as ctx:
        views = delivery.poll_views(ctx, dict.fromkeys(agent_ids, 0))
        assert all(not isinstance(v, Exception) and v.entries for v in views.values())
    return seqs


def _command_states(world: World) -> dict[uuid.UUID, str]:
    with system(world.db, world.tenant_id) as ctx:
        return {c.agent_id: c.state for c in ctx.session.scalars(select(Command))}


def test_acks_of_many_agents_in_one_transaction_keep_their_own_errors(
    db: Database, tmp_path, clock
) -> None:
    world = make_world(db, clock=clock)
    good, revoked, beyond, wrong_tenant = (new_agent(world, tmp_path, clock) for _ in range(4))
    seqs = _issued_and_sent(world, [good, revoked, beyond, wrong_tenant], clock)
    with system(db, world.tenant_id, clock=clock) as ctx:
        agents.revoke(ctx, revoked)
    other = make_world(db, clock=clock)

    with system(db, world.tenant_id, clock=clock) as ctx:
        results = delivery.ack_many(
            ctx,
            {
                good: [Ack(seq=seqs[good])],
                revoked: [Ack(seq=seqs[revoked])],
                beyond: [Ack(seq=seqs[beyond]), Ack(seq=seqs[beyond] + 5)],
                wrong_tenant: [Ack(seq=seqs[wrong_tenant])],
            },
            {good: world.tenant_id, revoked: world.tenant_id, beyond: world.tenant_id}
            | {wrong_tenant: other.tenant_id},
        )
    assert results[good] == seqs[good]
    assert isinstance(results[revoked], Unauthenticated)
    assert isinstance(results[beyond], NotFound)
    assert isinstance(results[wrong_tenant], Unauthenticated)
    states = _command_states(world)
    assert states[good] == "acked"
    assert states[revoked] == states[beyond] == states[wrong_tenant] == "sent", "none applied"
    with system(db, world.tenant_id) as ctx:
        assert agents.get(ctx, beyond).acked_seq == 0
        assert isinstance(delivery.ack_many(ctx, {beyond: []})[beyond], Invalid)


def test_concurrent_acks_share_transactions_and_each_hears_its_own_answer(
    db: Database, tmp_path, clock
) -> None:
    world = make_world(db, clock=clock)
    ids = [new_agent(world, tmp_path, clock) for _ in range(12)]
    seqs = _issued_and_sent(world, ids, clock)
    writer = ack_writer(db, clock, asyncio.to_thread)

    async def all_at_once() -> list[int | BaseException]:
        return await asyncio.gather(
            *(writer.submit(a, world.tenant_id, [Ack(seq=seqs[a])]) for a in ids[:-1]),
            writer.submit(ids[-1], world.tenant_id, [Ack(seq=seqs[ids[-1]] + 1)]),
            return_exceptions=True,
        )

    results = asyncio.run(all_at_once())
    assert results[:-1] == [seqs[a] for a in ids[:-1]]
    assert isinstance(results[-1], NotFound)
    assert writer.requests == len(ids)
    assert writer.batches < len(ids), "acks arriving together were written together"
    states = _command_states(world)
    assert [states[a] for a in ids] == ["acked"] * (len(ids) - 1) + ["sent"]


def test_a_last_seen_time_never_waits_for_an_agent_being_issued_to(pg: Database, tmp_path) -> None:
    """PostgreSQL's row locks: an agent whose row a command's issue holds is skipped (and
    kept for the next sweep), so the sweeper neither waits for it nor blocks it."""
    clock = SystemClock()
    world = make_world(pg, clock=clock)
    busy, free = new_agent(world, tmp_path, clock), new_agent(world, tmp_path, clock)
    with system(pg, world.tenant_id, clock=clock) as issuing:
        commands.issue(issuing, busy, "noop.echo", {})  # holds busy's row until commit
        with pg.transaction() as session:
            with unscoped(session, "a test bounds how long a lock may be waited for"):
                session.execute(text("SET LOCAL lock_timeout = '2s'"))
            skipped = agents.record_seen(session, {busy: clock.now(), free: clock.now()})
        assert skipped == {busy}
    with system(pg, world.tenant_id) as ctx:
        assert agents.get(ctx, free).last_seen_at is not None
        assert agents.get(ctx, busy).last_seen_at is None


def test_one_batch_reads_each_agents_own_window_of_its_sequence(
    db: Database, tmp_path, clock
) -> None:
    """A batch of polls names a different `after` per agent; each gets exactly the entries
    past its own, at most POLL_BATCH of them (the windows are one join on PostgreSQL, an OR
    on SQLite: both are run here)."""
    world = make_world(db, clock=clock)
    a, b, c = (new_agent(world, tmp_path, clock) for _ in range(3))
    counts = {a: 5, b: 2, c: delivery.POLL_BATCH + 3}
    seqs: dict[uuid.UUID, list[int]] = {a: [], b: [], c: []}
    with system(db, world.tenant_id, clock=clock) as ctx:
        for agent_id, n in counts.items():
            for _ in range(n):
                seqs[agent_id].append(commands.issue(ctx, agent_id, "noop.echo", {}).seq)
    after = {a: seqs[a][1], b: 0, c: seqs[c][0]}
    with system(db, world.tenant_id, clock=clock) as ctx:
        views = delivery.poll_views(ctx, after)
    got = {k: [e.seq for e in v.entries] for k, v in views.items() if not isinstance(v, Exception)}
    assert got[a] == seqs[a][2:]
    assert got[b] == seqs[b]
    assert got[c] == seqs[c][1 : 1 + delivery.POLL_BATCH]
    view_c = views[c]
    assert not isinstance(view_c, Exception)
    assert view_c.more
