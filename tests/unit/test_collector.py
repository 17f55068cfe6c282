"""The collector's tuning, in a process of its own (it changes process-wide state)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import gc, logging, sys
logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="%(message)s")
from dockyard.cloud import collector
young, middle, _ = gc.get_threshold()
collector.tune(3600)
collector.tune(3600)  # a second call changes nothing
assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()
assert gc.get_threshold() == (young, middle, 2**31 - 1), gc.get_threshold()
assert gc.callbacks.count(collector._on_collect) == 1
nest = [[i] for i in range(3_000_000)]  # enough objects for a full collection to be slow
gc.collect()
print("done")
"""


def test_tune_freezes_start_up_leaves_full_collections_to_the_timer_and_logs_pauses() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "done" in out.splitlines(), out
    assert "collector pause" in out, out
    assert "generation 2" in out, out
