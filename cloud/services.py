"""The process-wide services every transport uses, built once by `create_app`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from dockyard.cloud.auth.agent_tokens import AgentTokens
from dockyard.cloud.blobs import BlobStore
from dockyard.cloud.bus import Bus
from dockyard.cloud.domain.clock import Clock
from dockyard.cloud.domain.context import Ctx
from dockyard.cloud.domain.principal import Principal
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

    @contextmanager
    def ctx(self, principal: Principal) -> Iterator[Ctx]:
        """One transaction scoped to the principal's tenants; commits unless it raises."""
        with self.db.transaction(principal.tenant_ids) as session:
            yield Ctx(session, principal, self.clock)

    def in_tx(self, principal: Principal, fn: Callable[[Ctx], T]) -> T:
        with self.ctx(principal) as ctx:
            return fn(ctx)
