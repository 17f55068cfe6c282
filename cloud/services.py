"""The process-wide services every transport uses, built once by `create_app`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from dockyard.agent import protocol as p
from dockyard.cloud.auth.agent_tokens import AgentTokens
from dockyard.cloud.batching import Batcher, ack_writer, poll_reader
from dockyard.cloud.blobs import BlobStore
from dockyard.cloud.bus import Bus
from dockyard.cloud.domain import delivery
from dockyard.cloud.domain.clock import Clock
from dockyard.cloud.domain.context import Ctx
from dockyard.cloud.domain.principal import Principal
from dockyard.cloud.meter import Meter
from dockyard.cloud.settings import Settings
from dockyard.cloud.store.db import Database

T = TypeVar("T")


@dataclass
class Services:
    settings: Settings
    db: Database
    bus: Bus
    clock: Clock
    agent_tokens: AgentTokens
    blobs: BlobStore
    meter: Meter = field(init=False, default_factory=Meter)
    db_slots: anyio.CapacityLimiter = field(init=False)
    poll_reader: Batcher[int, delivery.PollView] = field(init=False)
    ack_writer: Batcher[list[p.Ack], int] = field(init=False)

    def __post_init__(self) -> None:
        # At most as many threads touch the database as the pool has connections, so no
        # request waits inside the pool or makes it open and close overflow connections.
        self.db_slots = anyio.CapacityLimiter(self.settings.db_pool_size)
        self.poll_reader = poll_reader(self.db, self.clock, self.run_db)
        self.ack_writer = ack_writer(self.db, self.clock, self.run_db)

    async def run_db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking database work on a worker thread, within the pool's size."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.db_slots)

    @contextmanager
    def ctx(self, principal: Principal) -> Iterator[Ctx]:
        """One transaction scoped to the principal's tenants; commits unless it raises."""
        with self.db.transaction(principal.tenant_ids) as session:
            yield Ctx(session, principal, self.clock)

    def in_tx(self, principal: Principal, fn: Callable[[Ctx], T]) -> T:
        with self.ctx(principal) as ctx:
            return fn(ctx)
