"""The garbage collector, tuned for a process that holds thousands of polls.

Each held poll keeps a few hundred objects alive for up to 25 s, long enough to reach the
oldest generation; with 10,000 held, a full collection scans millions of objects and stops
every request for 0.5 to 1.1 s (measured with `bench/poll_latency.py`, logged by this
module), and the default thresholds ran one every second or two while agents came and
went. So: what start-up built is frozen (it lives as long as the process and is never
scanned again), the young generations are collected as usual, the oldest only on a
timer (`DOCKYARD_GC_FULL_INTERVAL_S`), and any pause of SLOW_S or more is logged.
Reference counting frees almost everything; a full collection finds the rare cycle that
outlived two younger collections, and waiting minutes for it costs a little memory.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Any

log = logging.getLogger("dockyard.cloud.collector")

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


def _full_collections(every_s: float) -> None:
    while True:
        time.sleep(every_s)
        gc.collect()


def tune(full_every_s: float) -> None:
    """Call once, when the process has built its app and before it serves."""
    if _on_collect in gc.callbacks:
        return
    gc.callbacks.append(_on_collect)
    gc.collect()
    gc.freeze()
    # The oldest generation's own threshold is set out of reach: the timer runs it. The
    # young ones keep CPython's thresholds: raised twentyfold they gathered held polls'
    # objects until one middle collection scanned them all (0.8 s measured).
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 2**31 - 1)
    threading.Thread(
        target=_full_collections, args=(full_every_s,), name="full-gc", daemon=True
    ).start()
