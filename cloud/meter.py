"""What one replica counts as it works, for `/metrics`: the entries its poll answers
delivered, how long the polls that delivered them took, and the metadata it took in by kind.

Plain numbers on the app's `Services`, not prometheus_client's global metrics, so two apps in
one test process never share figures (the collector in `api/health.py` reads them at scrape
time). Every update happens on the event loop, after the work it counts, so nothing here
needs a lock.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

ANSWER_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""From a few milliseconds (entries already waiting) to a held poll's whole wait."""


@dataclass
class Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(init=False)
    """Per bucket, not cumulative: the last one is +Inf."""
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus' buckets: (upper bound, observations at most that)."""
        out, running = [], 0
        for bound, n in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


@dataclass
class Meter:
    delivered: Counter[str] = field(default_factory=Counter)
    """Entries handed to agents in poll answers, by kind (command, policy)."""
    delivering: Histogram = field(default_factory=lambda: Histogram(ANSWER_BUCKETS_S))
    """Seconds from a poll's arrival to its answer, for answers that carried entries: a poll
    held until its command came counts the wait plus the delivery."""
    metadata_bytes: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Request body bytes of accepted metadata batches, by (module, kind)."""
    metadata_records: Counter[tuple[str, str]] = field(default_factory=Counter)
