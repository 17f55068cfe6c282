"""Many small requests answered in a few transactions: polls' reads and agents' acks.

A burst of deliveries (one command to each of hundreds of agents) wakes as many polls, and
each woken agent acks what it got. Taken one by one that is two transactions per agent;
here, while a batch is running the next requests queue, and the next batch answers all of
them in one transaction (`delivery.poll_views`, `delivery.ack_many`); on PostgreSQL each of
those is one statement, run with no transaction around it (`one_statement`). A quiet moment
costs what it would alone: a lone request is run at once. At most LANES batches of one kind run at a
time, leaving the rest of the pool to job events and GraphQL.

Each request of a batch gets its own result or its own error (a revoked agent's ack fails,
its neighbours' do not); a database failure fails the whole batch, which is what one
transaction would have done to each of them alone.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from dockyard.agent import protocol as p
from dockyard.cloud.domain import delivery
from dockyard.cloud.domain.clock import Clock
from dockyard.cloud.domain.context import Ctx
from dockyard.cloud.domain.principal import Principal
from dockyard.cloud.store.db import Database

Q = TypeVar("Q")
R = TypeVar("R")
LANES = 2
MAX_BATCH = 500


@dataclass
class _Pending(Generic[Q, R]):
    agent_id: uuid.UUID
    tenant_id: uuid.UUID
    request: Q
    answer: asyncio.Future[R]


Work = Callable[[Ctx, dict[uuid.UUID, Q], dict[uuid.UUID, uuid.UUID]], Mapping[uuid.UUID, Any]]


class Batcher(Generic[Q, R]):
    """Runs `work` on every agent's request queued meanwhile, in one transaction. `work`
    gets each agent's request and the tenant its token names, and returns per agent a
    result or an exception to raise in that agent's request alone."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        run_db: Callable[..., Awaitable[Any]],
        work: Work[Q],
        lanes: int = LANES,
        *,
        one_statement: bool = False,
    ) -> None:
        self.db, self.clock, self.run_db, self.work, self.lanes = db, clock, run_db, work, lanes
        self.one_statement = one_statement and db.is_postgres
        """`work` runs one statement on PostgreSQL (atomic on its own), so it runs outside
        a transaction: a BEGIN and a COMMIT fewer on every batch."""
        self._queue: list[_Pending[Q, R]] = []
        self._running = 0
        self.batches = 0
        self.requests = 0

    async def submit(self, agent_id: uuid.UUID, tenant_id: uuid.UUID, request: Q) -> R:
        answer: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(agent_id, tenant_id, request, answer))
        if self._running < self.lanes:
            self._running += 1
            asyncio.get_running_loop().create_task(self._drain())
        return await answer

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch: list[_Pending[Q, R]] = []
                rest: list[_Pending[Q, R]] = []
                seen: set[uuid.UUID] = set()
                for pending in self._queue:
                    # One request per agent in a batch (an agent sends one at a time; a
                    # second, stray one waits for the next batch, so each keeps its order).
                    if pending.agent_id in seen or len(batch) >= MAX_BATCH:
                        rest.append(pending)
                    else:
                        seen.add(pending.agent_id)
                        batch.append(pending)
                self._queue = rest
                try:
                    results = await self.run_db(self._run, batch)
                except Exception as e:  # the database failed: every request of it hears
                    for pending in batch:
                        if not pending.answer.done():
                            pending.answer.set_exception(e)
                    continue
                self.batches += 1
                self.requests += len(batch)
                for pending in batch:
                    if pending.answer.done():
                        continue  # the request went away (client disconnected)
                    result = results[pending.agent_id]
                    if isinstance(result, Exception):
                        pending.answer.set_exception(result)
                    else:
                        pending.answer.set_result(result)
        finally:
            self._running -= 1

    def _run(self, batch: list[_Pending[Q, R]]) -> Mapping[uuid.UUID, Any]:
        tenants = frozenset(b.tenant_id for b in batch)
        wanted = {b.agent_id: b.request for b in batch}
        named = {b.agent_id: b.tenant_id for b in batch}
        if not self.one_statement:
            with self.db.transaction(tenants) as session:
                return self.work(Ctx(session, Principal.system(tenants), self.clock), wanted, named)
        with self.db.session(tenants) as session:
            session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            results = self.work(Ctx(session, Principal.system(tenants), self.clock), wanted, named)
            session.commit()  # nothing to send: the statement committed as it ran
            return results


def poll_reader(
    db: Database, clock: Clock, run_db: Callable[..., Awaitable[Any]]
) -> Batcher[int, delivery.PollView]:
    """Polls that must read the database: a first poll, a wake-up, a quiet answer grown
    old. The request is the sequence number the agent has (`after`). On PostgreSQL a
    batch is one statement (`store.delivery.poll_read`)."""
    return Batcher(db, clock, run_db, delivery.poll_views, one_statement=True)


def ack_writer(
    db: Database, clock: Clock, run_db: Callable[..., Awaitable[Any]]
) -> Batcher[list[p.Ack], int]:
    """`POST /acks`: the request is the agent's acks; the result its acknowledged head.
    On PostgreSQL a batch is one statement (`store.delivery.ack`)."""
    return Batcher(db, clock, run_db, delivery.ack_many, one_statement=True)
