"""Delivery's batched statements (`store/delivery.py` under `domain/delivery.py`), on both
databases: a batch of polls hands out, lapses and leaves alone exactly what one poll at
a time would, refuses revoked and foreign callers without touching their commands, and on
PostgreSQL the whole read is one statement with no transaction around it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, update

from dockyard.agent.protocol import Ack, AckOutcome, CommandEntry, settings_tag
from dockyard.cloud.batching import Batcher, ack_writer, poll_reader
from dockyard.cloud.domain import agents, commands, delivery
from dockyard.cloud.domain.clock import ManualClock, SystemClock
from dockyard.cloud.domain.errors import NotFound, Unauthenticated
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import Agent, Command

from ..factories import enrol_agent, make_world, system


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(SystemClock().now())


async def _in_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


def _state(db: Database, tenant_id: uuid.UUID, command_id: uuid.UUID) -> Command:
    with system(db, tenant_id) as ctx:
        row = ctx.session.get(Command, command_id)
        assert row is not None
        return row


@contextmanager
def _statements(db: Database) -> Iterator[list[str]]:
    """Every round trip the engine makes meanwhile: statements, and BEGIN / COMMIT /
    ROLLBACK where the connection is not in autocommit (psycopg sends none then)."""
    seen: list[str] = []

    def statement(_c: Any, _cur: Any, sql: str, *_: Any) -> None:
        seen.append(sql.split(None, 1)[0].upper())

    def tx(name: str) -> Any:
        def record(conn: Any) -> None:
            if not getattr(conn.connection.dbapi_connection, "autocommit", False):
                seen.append(name)

        return record

    listeners = [
        ("before_cursor_execute", statement),
        ("begin", tx("BEGIN")),
        ("commit", tx("COMMIT")),
        ("rollback", tx("ROLLBACK")),
    ]
    for name, fn in listeners:
        event.listen(db.engine, name, fn)
    try:
        yield seen
    finally:
        for name, fn in listeners:
            event.remove(db.engine, name, fn)


def test_a_batch_hands_out_lapses_and_skips_by_the_rules(
    db: Database, tmp_path: Path, clock: ManualClock
) -> None:
    world = make_world(db, clock=clock)
    a, b = enrol_agent(world, tmp_path), enrol_agent(world, tmp_path)
    with system(db, world.tenant_id, clock=clock) as ctx:
        short = commands.issue(ctx, a, "noop.echo", {"n": 1}, ttl=timedelta(seconds=5))
        kept = commands.issue(ctx, a, "noop.echo", {"n": 2}, timeout=timedelta(seconds=90))
        dropped = commands.issue(ctx, a, "noop.echo", {"n": 3})
        other = commands.issue(ctx, b, "noop.echo", {"n": 4})
        ctx.session.execute(
            update(Command).where(Command.id == dropped.id).values(state="cancelled")
        )
    clock.advance(timedelta(seconds=6))
    reader = poll_reader(db, clock, _in_thread)

    async def both() -> list[delivery.PollView]:
        return list(
            await asyncio.gather(
                reader.submit(a, world.tenant_id, 0), reader.submit(b, world.tenant_id, 0)
            )
        )

    view_a, view_b = asyncio.run(both())
    assert view_a.tag == view_b.tag == settings_tag(view_a.mode, view_a.features)
    assert [e.seq for e in view_a.entries] == [kept.seq]
    assert view_a.last_seq == dropped.seq
    [entry] = view_a.entries
    assert isinstance(entry, CommandEntry)
    assert entry.args == {"n": 2}
    assert [e.seq for e in view_b.entries] == [other.seq]
    assert _state(db, world.tenant_id, short.id).state == "expired"
    assert _state(db, world.tenant_id, dropped.id).state == "cancelled"
    handed = _state(db, world.tenant_id, kept.id)
    assert handed.state == "sent"
    assert handed.sent_at == clock.now()
    assert handed.result_due_at == clock.now() + timedelta(seconds=90)
    assert _state(db, world.tenant_id, other.id).state == "sent"
    # A second read hands the sent command out again (the agent had not acked it) and
    # moves nothing.
    with system(db, world.tenant_id, clock=clock) as ctx:
        again = delivery.poll_views(ctx, {a: 0}, {a: world.tenant_id})[a]
    assert isinstance(again, delivery.PollView)
    assert [e.seq for e in again.entries] == [kept.seq]
    assert _state(db, world.tenant_id, kept.id).sent_at == clock.now()


def test_revoked_and_foreign_callers_are_refused_and_move_nothing(
    db: Database, tmp_path: Path, clock: ManualClock
) -> None:
    world, elsewhere = make_world(db, clock=clock), make_world(db, clock=clock)
    live, revoked = enrol_agent(world, tmp_path), enrol_agent(world, tmp_path)
    foreign = enrol_agent(elsewhere, tmp_path)
    with system(db, world.tenant_id, clock=clock) as ctx:
        to_live = commands.issue(ctx, live, "noop.echo", {}).id
        to_revoked = commands.issue(ctx, revoked, "noop.echo", {}).id
    with system(db, elsewhere.tenant_id, clock=clock) as ctx:
        to_foreign = commands.issue(ctx, foreign, "noop.echo", {}).id
    with system(db, world.tenant_id, clock=clock) as ctx:
        ctx.session.execute(update(Agent).where(Agent.id == revoked).values(revoked_at=clock.now()))
    with system(db, world.tenant_id, elsewhere.tenant_id, clock=clock) as ctx:
        out = delivery.poll_views(
            ctx,
            {live: 0, revoked: 0, foreign: 0},
            # The foreign agent's token names the first tenant: refused, as a token whose
            # tenant is not the agent's own always is.
            {live: world.tenant_id, revoked: world.tenant_id, foreign: world.tenant_id},
        )
    assert isinstance(out[live], delivery.PollView)
    assert isinstance(out[revoked], Unauthenticated)
    assert isinstance(out[foreign], Unauthenticated)
    assert _state(db, world.tenant_id, to_live).state == "sent"
    assert _state(db, world.tenant_id, to_revoked).state == "queued"
    assert _state(db, elsewhere.tenant_id, to_foreign).state == "queued"


def test_a_scope_without_the_agents_tenant_sees_and_moves_nothing(
    db: Database, tmp_path: Path, clock: ManualClock
) -> None:
    world, elsewhere = make_world(db, clock=clock), make_world(db, clock=clock)
    agent_id = enrol_agent(world, tmp_path)
    with system(db, world.tenant_id, clock=clock) as ctx:
        command_id = commands.issue(ctx, agent_id, "noop.echo", {}).id
    with system(db, elsewhere.tenant_id, clock=clock) as ctx:
        out = delivery.poll_views(ctx, {agent_id: 0})
    assert isinstance(out[agent_id], Unauthenticated)
    assert _state(db, world.tenant_id, command_id).state == "queued"


def test_on_postgresql_a_poll_read_is_one_statement_outside_a_transaction(
    pg: Database, tmp_path: Path, clock: ManualClock
) -> None:
    world = make_world(pg, clock=clock)
    agent_id = enrol_agent(world, tmp_path)
    with system(pg, world.tenant_id, clock=clock) as ctx:
        commands.issue(ctx, agent_id, "noop.echo", {})
    reader = poll_reader(pg, clock, _in_thread)
    with _statements(pg) as seen:
        view = asyncio.run(reader.submit(agent_id, world.tenant_id, 0))
    assert len(view.entries) == 1
    assert seen == ["WITH"]


def test_acks_move_commands_once_and_never_back(
    db: Database, tmp_path: Path, clock: ManualClock
) -> None:
    world = make_world(db, clock=clock)
    agent_id = enrol_agent(world, tmp_path)
    with system(db, world.tenant_id, clock=clock) as ctx:
        first = commands.issue(ctx, agent_id, "noop.echo", {})
        second = commands.issue(ctx, agent_id, "noop.echo", {})
        delivery.poll_views(ctx, {agent_id: 0})
    writer: Batcher[list[Ack], int] = ack_writer(db, clock, _in_thread)
    rejected = Ack(seq=second.seq, outcome=AckOutcome.REJECTED, code="busy")
    head = asyncio.run(writer.submit(agent_id, world.tenant_id, [Ack(seq=first.seq), rejected]))
    assert head == second.seq
    assert _state(db, world.tenant_id, first.id).state == "acked"
    refused = _state(db, world.tenant_id, second.id)
    assert (refused.state, refused.result_code) == ("rejected", "busy")
    # An older ack arriving late leaves the head where it is.
    assert asyncio.run(writer.submit(agent_id, world.tenant_id, [Ack(seq=first.seq)])) == head
    with system(db, world.tenant_id, clock=clock) as ctx:
        assert agents.get(ctx, agent_id).acked_seq == second.seq


def test_acks_of_a_revoked_agent_or_beyond_the_sequence_apply_nothing(
    db: Database, tmp_path: Path, clock: ManualClock
) -> None:
    world = make_world(db, clock=clock)
    good, revoked, ahead = (enrol_agent(world, tmp_path) for _ in range(3))
    with system(db, world.tenant_id, clock=clock) as ctx:
        issued = {a: commands.issue(ctx, a, "noop.echo", {}) for a in (good, revoked, ahead)}
        delivery.poll_views(ctx, {a: 0 for a in issued})
        ctx.session.execute(update(Agent).where(Agent.id == revoked).values(revoked_at=clock.now()))
    acks = {
        good: [Ack(seq=issued[good].seq)],
        revoked: [Ack(seq=issued[revoked].seq)],
        ahead: [Ack(seq=issued[ahead].seq), Ack(seq=issued[ahead].seq + 1)],
    }
    with system(db, world.tenant_id, clock=clock) as ctx:
        out = delivery.ack_many(ctx, acks, {a: world.tenant_id for a in acks})
    assert out[good] == issued[good].seq
    assert isinstance(out[revoked], Unauthenticated)
    assert isinstance(out[ahead], NotFound)
    assert _state(db, world.tenant_id, issued[good].id).state == "acked"
    for agent_id in (revoked, ahead):
        assert _state(db, world.tenant_id, issued[agent_id].id).state == "sent"
        with system(db, world.tenant_id, clock=clock) as ctx:
            assert agents.get(ctx, agent_id).acked_seq == 0


def test_on_postgresql_an_ack_batch_is_one_statement_outside_a_transaction(
    pg: Database, tmp_path: Path, clock: ManualClock
) -> None:
    world = make_world(pg, clock=clock)
    agent_id = enrol_agent(world, tmp_path)
    with system(pg, world.tenant_id, clock=clock) as ctx:
        seq = commands.issue(ctx, agent_id, "noop.echo", {}).seq
        delivery.poll_views(ctx, {agent_id: 0})
    writer: Batcher[list[Ack], int] = ack_writer(pg, clock, _in_thread)
    with _statements(pg) as seen:
        assert asyncio.run(writer.submit(agent_id, world.tenant_id, [Ack(seq=seq)])) == seq
    assert seen == ["WITH"]
