"""The per-request context: the principal resolved once at the edge, the request's domain
`Work` (its one tenant-scoped transaction, owned by the domain), and the DataLoaders. All
database work of one request runs in worker threads one at a time (a limiter of one), so
the request's single session is never used concurrently."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from strawberry.dataloader import DataLoader

from dockyard.cloud.domain.context import Ctx
from dockyard.cloud.domain.principal import Principal
from dockyard.cloud.domain.work import Work
from dockyard.cloud.services import Services

T = TypeVar("T")


@dataclass
class Context:
    svc: Services
    principal: Principal | None
    limiter: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(1))
    _work: Work | None = None
    loaders: dict[str, DataLoader[uuid.UUID, Any]] = field(default_factory=dict)

    @property
    def work(self) -> Work:
        if self._work is None:
            assert self.principal is not None
            self._work = Work(self.svc.db, self.principal, self.svc.clock)
        return self._work

    async def read(self, fn: Callable[[Ctx], T]) -> T:
        """`fn` in the request's transaction; domain errors propagate to the field."""
        return await self.run(lambda: self.work.read(fn))

    async def write(self, fn: Callable[[Ctx], T]) -> T:
        """`fn`, committed by the domain; on a domain error it rolled back (and audited a
        refusal in a transaction of its own) before the error reaches the field."""
        return await self.run(lambda: self.work.write(fn))

    async def run(self, fn: Callable[[], T]) -> T:
        """One request's database work runs one step at a time (its session is not
        thread-safe), and takes a slot of the process-wide database limit."""
        async with self.svc.db_slots:
            return await anyio.to_thread.run_sync(fn, limiter=self.limiter)

    def close(self) -> None:
        if self._work is not None:
            self._work.close()
            self._work = None

    def loader(
        self, name: str, load: Callable[[Ctx, Sequence[uuid.UUID]], list[Any]]
    ) -> DataLoader[uuid.UUID, Any]:
        """Rows by id through the domain's `load`, batched per request under `name`; another
        tenant's id loads as None."""
        if name not in self.loaders:

            async def batch(ids: list[uuid.UUID]) -> list[Any]:
                return await self.read(lambda ctx: load(ctx, ids))

            self.loaders[name] = DataLoader(load_fn=batch)
        return self.loaders[name]
