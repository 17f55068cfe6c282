"""What every domain call needs: a tenant-scoped session, the principal and the clock."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from .clock import Clock
from .principal import Principal

M = TypeVar("M")


@dataclass
class Ctx:
    session: Session
    principal: Principal
    clock: Clock

    def now(self) -> datetime:
        return self.clock.now()

    def load(self, model: type[M], ids: Sequence[uuid.UUID]) -> list[M | None]:
        """Rows of `model` by id, in the order asked, in one statement: for a transport's
        batch loaders. Another tenant's row loads as None, like a missing one."""
        column: Any = getattr(model, "id")  # noqa: B009 - every model loaded here has an id
        rows: list[Any] = list(self.session.scalars(select(model).where(column.in_(ids))))
        by_id = {r.id: r for r in rows}
        return [by_id.get(i) for i in ids]
