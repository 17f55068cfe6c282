"""Failed password sign-ins, counted per e-mail, so a password cannot be guessed at speed.

scrypt makes each guess cost the server tens of milliseconds, which still allows a few
thousand guesses an hour. After `LIMIT` failures for one e-mail within `WINDOW`, further
attempts for it are refused (429 with `Retry-After`) until the oldest failure leaves the
window; a right password is refused too while it lasts, so a guesser learns nothing. Kept
in the process: password sign-in exists only on the embedded default, one process. Times
come from the injected clock.
"""

from __future__ import annotations

import threading
from collections import deque
from datetime import datetime, timedelta

LIMIT = 5
WINDOW = timedelta(minutes=15)
MAX_KEYS = 10_000
"""Past this many e-mails tracked, the one whose last failure is oldest is forgotten."""


class FailedSignIns:
    def __init__(self, limit: int = LIMIT, window: timedelta = WINDOW) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[datetime]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(email: str) -> str:
        return email.strip().lower()

    def _recent(self, key: str, now: datetime) -> deque[datetime]:
        times = self._failures.get(key, deque())
        while times and now - times[0] >= self.window:
            times.popleft()
        return times

    def wait(self, email: str, now: datetime) -> int:
        """Seconds until `email` may try again; 0 when it may now."""
        with self._lock:
            times = self._recent(self._key(email), now)
            if len(times) < self.limit:
                return 0
            return max(1, int((times[0] + self.window - now).total_seconds()) + 1)

    def failed(self, email: str, now: datetime) -> None:
        key = self._key(email)
        with self._lock:
            times = self._recent(key, now)
            times.append(now)
            self._failures[key] = times
            if len(self._failures) > MAX_KEYS:
                oldest = min(self._failures, key=lambda k: self._failures[k][-1])
                del self._failures[oldest]

    def succeeded(self, email: str) -> None:
        with self._lock:
            self._failures.pop(self._key(email), None)
