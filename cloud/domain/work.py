"""One request's work with the domain: its transaction, owned here rather than by the
transport. A transport builds a `Work` for its principal, hands it functions of a `Ctx`,
and maps what comes back or what is raised; it never commits, rolls back or audits."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session

from dockyard.cloud.store.db import Database

from . import audit
from .clock import Clock
from .context import Ctx
from .errors import DomainError, Refused
from .principal import Principal

R = TypeVar("R")


class Work:
    """A tenant-scoped session opened at first use and kept for the request, so reads and
    the DataLoaders of one request see one another. Not thread-safe: the caller runs one
    step at a time."""

    def __init__(self, db: Database, principal: Principal, clock: Clock) -> None:
        self._db = db
        self.principal = principal
        self._clock = clock
        self._session: Session | None = None

    def _ctx(self) -> Ctx:
        if self._session is None:
            self._session = self._db.session(self.principal.tenant_ids)
        return Ctx(self._session, self.principal, self._clock)

    def read(self, fn: Callable[[Ctx], R]) -> R:
        """`fn` in the request's transaction, left open for the next read."""
        return self._run(fn, commit=False)

    def write(self, fn: Callable[[Ctx], R]) -> R:
        """`fn`, then commit; an error rolls everything back."""
        return self._run(fn, commit=True)

    def _run(self, fn: Callable[[Ctx], R], *, commit: bool) -> R:
        ctx = self._ctx()
        try:
            value = fn(ctx)
            if commit:
                ctx.session.commit()
            return value
        except DomainError as e:
            ctx.session.rollback()
            if isinstance(e, Refused):
                # The refusal outlives the rolled-back request: a transaction of its own.
                audit.refused(ctx, e)
                ctx.session.commit()
            raise

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
