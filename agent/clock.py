"""The clock every lifecycle timer reads, so tests run months in seconds and demos in minutes.

`DOCKYARD_CLOCK` chooses it for a whole agent process:
- unset or `system`: the wall clock;
- `file:/path`: the ISO-8601 time written in that file (a test moves it forward);
- `scale:N`: the wall clock running N times as fast from the moment the agent started
  (`scale:1440` makes a day pass in a minute, for the demo).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

Clock = Callable[[], datetime]


def system() -> datetime:
    return datetime.now(UTC)


class ManualClock:
    """A clock a test sets and advances by hand."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        self.now += delta
        return self.now


class FileClock:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self) -> datetime:
        text = self.path.read_text().strip()
        moment = datetime.fromisoformat(text)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class ScaledClock:
    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.origin = datetime.now(UTC)
        self.started = time.monotonic()

    def __call__(self) -> datetime:
        elapsed = (time.monotonic() - self.started) * self.factor
        return self.origin + timedelta(seconds=elapsed)


def from_env() -> Clock:
    spec = os.environ.get("DOCKYARD_CLOCK", "system")
    if spec in ("", "system"):
        return system
    kind, _, value = spec.partition(":")
    if kind == "file" and value:
        return FileClock(Path(value))
    if kind == "scale":
        try:
            factor = float(value)
        except ValueError:
            factor = 0.0
        if factor > 0:
            return ScaledClock(factor)
    raise ValueError(f"DOCKYARD_CLOCK={spec!r}: use system, file:/path or scale:N (N > 0)")
