"""What every domain call needs: a tenant-scoped session, the principal and the clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from .clock import Clock
from .principal import Principal


@dataclass
class Ctx:
    session: Session
    principal: Principal
    clock: Clock

    def now(self) -> datetime:
        return self.clock.now()
