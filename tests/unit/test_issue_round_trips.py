"""Issuing a command on PostgreSQL: the agent's sequence number is claimed, and its wake-up
sent, in the statement that writes the command (`claim_and_insert`: no UPDATE or
`pg_notify` of its own); the wake-up is heard once the transaction commits and never when
it rolls back (a refusal after the statement rolls everything back); wake-ups no insert
carried are still sent at commit."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import psycopg
import pytest
from sqlalchemy import select

from dockyard.cloud.bus import libpq_conninfo
from dockyard.cloud.domain import agents, commands, sequence
from dockyard.cloud.domain.clock import ManualClock, SystemClock
from dockyard.cloud.domain.context import Ctx
from dockyard.cloud.domain.errors import NotFound, Refused, Revoked
from dockyard.cloud.domain.principal import Principal, Role
from dockyard.cloud.store.db import (
    NOTIFY_BATCH,
    NOTIFY_CHANNEL,
    Database,
    claim_and_insert,
    notify_payloads,
)
from dockyard.cloud.store.models import Agent, Command, Job
from dockyard.cloud.store.tenancy import TenantScopeError

from ..factories import make_world, system
from .test_commands import new_agent
from .test_delivery_batch import _statements


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(SystemClock().now())


@contextmanager
def _listening(db: Database) -> Iterator[psycopg.Connection]:
    with psycopg.connect(libpq_conninfo(db.url), autocommit=True) as conn:
        conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        yield conn


def _heard(conn: psycopg.Connection) -> list[str]:
    """The payloads delivered so far (a short wait: a NOTIFY committed is already sent)."""
    return [n.payload for n in conn.notifies(timeout=0.5, stop_after=None)]


def test_an_issue_is_three_round_trips_and_wakes_its_agent_at_commit(
    pg: Database, tmp_path, clock: ManualClock
) -> None:
    world = make_world(pg, clock=clock)
    agent = new_agent(world, tmp_path, clock)
    with _listening(pg) as listener, _statements(pg) as seen:
        with system(pg, world.tenant_id, clock=clock) as ctx:
            commands.issue(ctx, agent, "noop.echo", {})
            assert _heard(listener) == [], "nothing is heard before the commit"
        assert seen == ["BEGIN", "WITH", "COMMIT"]
        assert _heard(listener) == [str(agent)]


def test_a_rolled_back_issue_wakes_no_one(pg: Database, tmp_path, clock: ManualClock) -> None:
    world = make_world(pg, clock=clock)
    agent = new_agent(world, tmp_path, clock)

    def issue_then_fail() -> None:
        with system(pg, world.tenant_id, clock=clock) as ctx:
            commands.issue(ctx, agent, "noop.echo", {})
            raise RuntimeError("the transaction fails after the insert")

    with _listening(pg) as listener:
        with pytest.raises(RuntimeError, match="after the insert"):
            issue_then_fail()
        assert _heard(listener) == []


def test_wakes_no_insert_carried_are_sent_at_commit(
    pg: Database, tmp_path, clock: ManualClock
) -> None:
    """A policy entry (`sequence.append`, through the unit of work) and a command in one
    transaction: the command's statement carries both wake-ups asked for before it; one
    asked for after it goes at commit. Each agent is heard."""
    world = make_world(pg, clock=clock)
    first, second, third = (new_agent(world, tmp_path, clock) for _ in range(3))
    with _listening(pg) as listener, _statements(pg) as seen:
        with system(pg, world.tenant_id, clock=clock) as ctx:
            sequence.append(ctx, first, world.tenant_id, "policy", {})
            commands.issue(ctx, second, "noop.echo", {}, ttl=timedelta(minutes=5))
            sequence.append(ctx, third, world.tenant_id, "policy", {})
        heard = {a for payload in _heard(listener) for a in payload.split(",")}
    assert heard == {str(first), str(second), str(third)}
    assert seen.count("SELECT") == 1, "the wake-up left after the insert: one at commit"


def test_a_wake_up_of_many_agents_is_cut_into_payloads() -> None:
    agents = sorted(uuid.uuid4() for _ in range(NOTIFY_BATCH * 2 + 1))
    payloads = notify_payloads(agents)
    assert [len(p.split(",")) for p in payloads] == [NOTIFY_BATCH, NOTIFY_BATCH, 1]
    assert [uuid.UUID(a) for p in payloads for a in p.split(",")] == agents
    assert notify_payloads([]) == []


def _written(db: Database, tenant_id: uuid.UUID, agent_id: uuid.UUID) -> tuple[int, int, int]:
    """The agent's last sequence number and its commands and jobs, as stored."""
    with system(db, tenant_id) as ctx:
        agent = ctx.session.get(Agent, agent_id)
        assert agent is not None
        n_commands = len(
            list(ctx.session.scalars(select(Command.id).where(Command.agent_id == agent_id)))
        )
        n_jobs = len(list(ctx.session.scalars(select(Job.id).where(Job.agent_id == agent_id))))
        return agent.last_seq, n_commands, n_jobs


def test_a_refused_issue_writes_nothing_and_takes_no_number(
    db: Database, tmp_path, clock: ManualClock
) -> None:
    """The number is claimed in the statement that writes the command, and the agent
    checked after it: another tenant's agent, a role that may not issue and a revoked
    agent are each refused, and the rollback leaves no command, no job and no number
    taken (both databases; on PostgreSQL the claim keeps to the session's tenants)."""
    world, other = make_world(db, clock=clock), make_world(db, clock=clock)
    mine, revoked = new_agent(world, tmp_path, clock), new_agent(world, tmp_path, clock)
    foreign = new_agent(other, tmp_path, clock)
    with system(db, world.tenant_id, clock=clock) as ctx:
        agents.revoke(ctx, revoked)
    before = {a: _written(db, world.tenant_id, a) for a in (mine, revoked)}
    before[foreign] = _written(db, other.tenant_id, foreign)

    viewer = Principal("user", uuid.uuid4(), {world.tenant_id: Role.VIEWER})
    operator = Principal("user", uuid.uuid4(), {world.tenant_id: Role.OPERATOR})
    attempts: list[tuple[Principal, uuid.UUID, type[Exception]]] = [
        (operator, foreign, NotFound),
        (viewer, mine, Refused),
        (operator, revoked, Revoked),
    ]
    for principal, agent, refusal in attempts:
        with db.session(principal.tenant_ids) as session:
            ctx = Ctx(session, principal, clock)
            with pytest.raises(refusal):
                commands.issue(ctx, agent, "noop.echo", {})
            session.rollback()  # as `Work` does on a domain error
    assert _written(db, world.tenant_id, mine) == before[mine]
    assert _written(db, world.tenant_id, revoked) == before[revoked]
    assert _written(db, other.tenant_id, foreign) == before[foreign]
    with db.session(operator.tenant_ids) as session:
        issued = commands.issue(Ctx(session, operator, clock), mine, "noop.echo", {})
        session.commit()
    assert issued.seq == before[mine][0] + 1
    assert issued.tenant_id == world.tenant_id
    assert _written(db, world.tenant_id, mine) == (
        issued.seq,
        before[mine][1] + 1,
        before[mine][2] + 1,
    )


def test_the_claim_keeps_to_the_sessions_tenants(
    db: Database, tmp_path, clock: ManualClock
) -> None:
    """`claim_and_insert` itself finds no agent outside the session's scope (the domain's
    check after it is a second wall, not the only one), and refuses a session with none."""
    world, other = make_world(db, clock=clock), make_world(db, clock=clock)
    foreign = new_agent(other, tmp_path, clock)
    with db.session({world.tenant_id}) as session:
        assert claim_and_insert(session, foreign, []) is None
    with db.session({other.tenant_id}) as session:
        claimed = claim_and_insert(session, foreign, [])
        assert claimed is not None
        assert claimed.tenant_id == other.tenant_id
    with db.session() as session, pytest.raises(TenantScopeError):
        claim_and_insert(session, foreign, [])
