"""The per-request context: the principal resolved once at the edge, one tenant-scoped
session, and the DataLoaders. All database work of one request runs in worker threads one
at a time (a limiter of one), so the request's single session is never used concurrently."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from sqlalchemy import select
from sqlalchemy.orm import Session
from strawberry.dataloader import DataLoader

from dockyard.cloud.domain.context import Ctx
from dockyard.cloud.domain.principal import Principal
from dockyard.cloud.services import Services
from dockyard.cloud.store.models import Base, Job, Site, Tenant

T = TypeVar("T")


@dataclass
class Context:
    svc: Services
    principal: Principal | None
    limiter: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(1))
    _session: Session | None = None
    loaders: dict[str, DataLoader[uuid.UUID, Any]] = field(default_factory=dict)

    @property
    def session(self) -> Session:
        if self._session is None:
            assert self.principal is not None
            self._session = self.svc.db.session(self.principal.tenant_ids)
        return self._session

    def domain(self) -> Ctx:
        assert self.principal is not None
        return Ctx(self.session, self.principal, self.svc.clock)

    async def run(self, fn: Callable[[], T]) -> T:
        """One request's database work runs one step at a time (its session is not
        thread-safe), and takes a slot of the process-wide database limit."""
        async with self.svc.db_slots:
            return await anyio.to_thread.run_sync(fn, limiter=self.limiter)

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def loader(self, model: type[Base]) -> DataLoader[uuid.UUID, Any]:
        """Rows of `model` by id, batched per request; another tenant's id loads as None."""
        name = model.__name__
        if name not in self.loaders:

            async def load(ids: list[uuid.UUID]) -> list[Any]:
                def fetch() -> list[Any]:
                    column = getattr(model, "id")  # noqa: B009 - every model loaded here has an id
                    rows: list[Any] = list(
                        self.session.scalars(select(model).where(column.in_(ids)))
                    )
                    by_id = {r.id: r for r in rows}
                    return [by_id.get(i) for i in ids]

                return await self.run(fetch)

            self.loaders[name] = DataLoader(load_fn=load)
        return self.loaders[name]


LOADABLE = (Tenant, Site, Job)
