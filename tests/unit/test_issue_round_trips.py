"""Issuing a command on PostgreSQL: the wake-up rides in the statement that writes the
command (no `pg_notify` of its own at commit), is heard once the transaction commits and
never when it rolls back; wake-ups no insert carried are still sent at commit."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import psycopg
import pytest

from dockyard.cloud.bus import libpq_conninfo
from dockyard.cloud.domain import commands, sequence
from dockyard.cloud.domain.clock import ManualClock, SystemClock
from dockyard.cloud.store.db import NOTIFY_BATCH, NOTIFY_CHANNEL, Database, notify_payloads

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


def test_an_issue_is_four_round_trips_and_wakes_its_agent_at_commit(
    pg: Database, tmp_path, clock: ManualClock
) -> None:
    world = make_world(pg, clock=clock)
    agent = new_agent(world, tmp_path, clock)
    with _listening(pg) as listener, _statements(pg) as seen:
        with system(pg, world.tenant_id, clock=clock) as ctx:
            commands.issue(ctx, agent, "noop.echo", {})
            assert _heard(listener) == [], "nothing is heard before the commit"
        assert seen == ["BEGIN", "UPDATE", "WITH", "COMMIT"]
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
