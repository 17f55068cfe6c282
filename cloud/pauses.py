"""Collector pauses, logged: a process holding thousands of polls keeps millions of
objects, and a full collection stops every request, held or not, while it runs. A pause
long enough to delay deliveries is worth a line in the log, with its generation."""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

log = logging.getLogger("dockyard.cloud.pauses")

SLOW_S = 0.05
_started: dict[str, float] = {}


def _on_collect(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started["at"] = time.perf_counter()
        return
    took = time.perf_counter() - _started.pop("at", time.perf_counter())
    if took >= SLOW_S:
        log.warning(
            "collector pause %.0f ms (generation %s, %s collected)",
            took * 1000,
            info.get("generation"),
            info.get("collected"),
        )


def watch() -> None:
    """Log every collection that takes SLOW_S or more; once per process."""
    if _on_collect not in gc.callbacks:
        gc.callbacks.append(_on_collect)
