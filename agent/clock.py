"""The clock every lifecycle timer reads, so tests run months in seconds and demos in minutes.

`DOCKYARD_CLOCK` chooses it for a whole agent process:
- unset or `system`: the wall clock;
- `file:/path`: the ISO-8601 time written in that file (a test moves it forward);
- `scale:N`: the wall clock running N times as fast from the moment the agent started
  (`scale:1440` makes a day pass in a minute);
- `scale:N:/path`: the same, its position kept in that file, so a restart goes on from where
  the last run stopped instead of starting again from the wall clock, which the fast clock
  had left far behind (the demo's: samples and decisions are never in the clock's future).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
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
    """The wall clock sped up `factor` times. With a `position` file it starts from the
    later of the wall clock and the position a previous run left there, and writes its
    own position back at most once per `SAVE_EVERY_S` of real time (atomically), so it
    never runs backwards across restarts: at worst it repeats the last second's span."""

    SAVE_EVERY_S = 1.0

    def __init__(self, factor: float, position: Path | None = None) -> None:
        self.factor = factor
        self.position = position
        self.origin = datetime.now(UTC)
        if position is not None:
            saved = _saved_position(position)
            if saved is not None and saved > self.origin:
                self.origin = saved
        self.started = time.monotonic()
        self._saved_at: float | None = None

    def __call__(self) -> datetime:
        mono = time.monotonic()
        now = self.origin + timedelta(seconds=(mono - self.started) * self.factor)
        if self.position is not None and (
            self._saved_at is None or mono - self._saved_at >= self.SAVE_EVERY_S
        ):
            self._saved_at = mono
            self._save(now)
        return now

    def _save(self, now: datetime) -> None:
        """Written only forward: another process on the same file (a CLI command beside
        the running agent) never moves the position back."""
        assert self.position is not None
        saved = _saved_position(self.position)
        if saved is not None and saved >= now:
            return
        tmp = self.position.with_name(f"{self.position.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(now.isoformat())
            os.replace(tmp, self.position)
        except OSError:
            pass  # a clock that cannot save still tells the time; the next call tries again


def _saved_position(path: Path) -> datetime | None:
    try:
        moment = datetime.fromisoformat(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def from_env() -> Clock:
    from .settings import AgentSettings

    spec = AgentSettings.from_env().clock
    if spec in ("", "system"):
        return system
    kind, _, value = spec.partition(":")
    if kind == "file" and value:
        return FileClock(Path(value))
    if kind == "scale":
        number, _, path = value.partition(":")
        try:
            factor = float(number)
        except ValueError:
            factor = 0.0
        if factor > 0:
            return ScaledClock(factor, Path(path) if path else None)
    raise ValueError(
        f"DOCKYARD_CLOCK={spec!r}: use system, file:/path, scale:N or scale:N:/path (N > 0)"
    )


SKEW_FILE = "cloud-clock.json"
SKEW_STALE = timedelta(days=1)


@dataclass(frozen=True)
class Skew:
    """How far this agent's clock runs ahead of the cloud's (negative: behind), measured
    from the `Dockyard-Time` of the cloud's last answer. Docked, the cloud's time is the
    reference for notices and deadlines: the agent's estimate of it is its clock minus this,
    so an agent days ahead or behind still acts at the time a notice states."""

    seconds: float
    measured_at: datetime
    """By the agent's clock."""

    def cloud_now(self, agent_now: datetime) -> datetime:
        return agent_now - timedelta(seconds=self.seconds)

    def save(self, directory: Path) -> None:
        tmp = directory / (SKEW_FILE + ".tmp")
        tmp.write_text(
            json.dumps({"skew_s": self.seconds, "measured_at": self.measured_at.isoformat()})
        )
        os.replace(tmp, directory / SKEW_FILE)

    @classmethod
    def load(cls, directory: Path, agent_now: datetime) -> Skew | None:
        """The last measurement, unless it is older than a day (the agent was undocked, or
        has not reached the cloud since: its own clock is all it has)."""
        try:
            data = json.loads((directory / SKEW_FILE).read_text())
            skew = cls(float(data["skew_s"]), datetime.fromisoformat(data["measured_at"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if abs(agent_now - skew.measured_at) > SKEW_STALE:
            return None
        return skew
