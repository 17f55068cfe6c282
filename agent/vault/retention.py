"""Which snapshots a retention rule keeps: keep the last N, and the newest of each of the
last N days, weeks and months. Pinned snapshots are kept whatever the rule says.

Snapshots are grouped by (host, name): a rule keeps the last N of each VM's archives, not
the last N of the whole repository.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from .errors import VaultError


class Dated(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def time(self) -> str: ...

    @property
    def host(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def pinned(self) -> bool: ...


@dataclass(frozen=True)
class Retention:
    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0

    def __post_init__(self) -> None:
        values = (self.keep_last, self.keep_daily, self.keep_weekly, self.keep_monthly)
        if any(v < 0 for v in values):
            raise VaultError("keep counts are zero or more")
        if not any(values):
            raise VaultError("a retention rule keeps something: give at least one keep count")

    def keep(self, snapshots: Iterable[Dated]) -> set[str]:
        """The ids to keep; every other snapshot may be forgotten."""
        groups: dict[tuple[str, str], list[Dated]] = {}
        for snap in snapshots:
            groups.setdefault((snap.host, snap.name), []).append(snap)
        kept: set[str] = set()
        for group in groups.values():
            newest_first = sorted(group, key=lambda s: (s.time, s.id), reverse=True)
            kept.update(s.id for s in newest_first if s.pinned)
            kept.update(s.id for s in newest_first[: self.keep_last])
            kept.update(_buckets(newest_first, self.keep_daily, lambda t: t.strftime("%Y-%m-%d")))
            kept.update(_buckets(newest_first, self.keep_weekly, lambda t: t.strftime("%G-W%V")))
            kept.update(_buckets(newest_first, self.keep_monthly, lambda t: t.strftime("%Y-%m")))
        return kept


def _buckets(newest_first: list[Dated], count: int, bucket: Callable[[datetime], str]) -> set[str]:
    """The newest snapshot in each of the `count` most recent buckets that have one."""
    kept: set[str] = set()
    seen: set[str] = set()
    for snap in newest_first:
        if len(seen) >= count:
            break
        key = bucket(datetime.fromisoformat(snap.time))
        if key not in seen:
            seen.add(key)
            kept.add(snap.id)
    return kept
