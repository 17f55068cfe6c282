"""Polls' database reads, answered in batches.

Every poll that must read the database (a first poll, a wake-up, a quiet answer grown old)
asks here. While a read is running, the next ones queue; the next read answers all of them
in one transaction (`agents.poll_views`), so a burst of wake-ups costs a few statements per
batch instead of a few per agent, and a quiet moment costs what it did before (a lone
request is read at once). At most LANES batches run at a time, leaving the rest of the
pool to acks, job events and GraphQL.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from dockyard.cloud.domain import agents
from dockyard.cloud.domain.clock import Clock
from dockyard.cloud.domain.context import Ctx
from dockyard.cloud.domain.principal import Principal
from dockyard.cloud.store.db import Database

T = TypeVar("T")
LANES = 2
MAX_BATCH = 500


@dataclass
class _Request:
    agent_id: uuid.UUID
    tenant_id: uuid.UUID
    after: int
    answer: asyncio.Future[agents.PollView]


class PollReader:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        run_db: Callable[..., Awaitable[Any]],
        lanes: int = LANES,
    ) -> None:
        self.db, self.clock, self.run_db, self.lanes = db, clock, run_db, lanes
        self._queue: list[_Request] = []
        self._running = 0
        self.batches = 0
        self.requests = 0

    async def read(self, agent_id: uuid.UUID, tenant_id: uuid.UUID, after: int) -> agents.PollView:
        answer: asyncio.Future[agents.PollView] = asyncio.get_running_loop().create_future()
        self._queue.append(_Request(agent_id, tenant_id, after, answer))
        if self._running < self.lanes:
            self._running += 1
            asyncio.get_running_loop().create_task(self._drain())
        return await answer

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch: list[_Request] = []
                rest: list[_Request] = []
                seen: set[uuid.UUID] = set()
                for request in self._queue:
                    # One request per agent in a batch (an agent polls once at a time; a
                    # second, stray request waits for the next batch).
                    if request.agent_id in seen or len(batch) >= MAX_BATCH:
                        rest.append(request)
                    else:
                        seen.add(request.agent_id)
                        batch.append(request)
                self._queue = rest
                try:
                    views = await self.run_db(self._read, batch)
                except Exception as e:  # the database failed: every request of it hears
                    for request in batch:
                        if not request.answer.done():
                            request.answer.set_exception(e)
                    continue
                self.batches += 1
                self.requests += len(batch)
                for request in batch:
                    if request.answer.done():
                        continue  # the poll went away (client disconnected)
                    view = views[request.agent_id]
                    if isinstance(view, Exception):
                        request.answer.set_exception(view)
                    else:
                        request.answer.set_result(view)
        finally:
            self._running -= 1

    def _read(self, batch: list[_Request]) -> dict[uuid.UUID, Any]:
        tenants = frozenset(r.tenant_id for r in batch)
        with self.db.transaction(tenants) as session:
            ctx = Ctx(session, Principal.system(tenants), self.clock)
            return agents.poll_views(
                ctx,
                {r.agent_id: r.after for r in batch},
                expect_tenant={r.agent_id: r.tenant_id for r in batch},
            )
