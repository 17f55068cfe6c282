"""Named points where a test may have the agent kill itself with SIGKILL.

`DOCKYARD_CRASH_AT=after_effect` (say) makes the agent die the first time it passes that
point, as a power cut would, so tests can prove the journal's exactly-once promise on a real
process. A marker file in the state directory makes each point fire only once.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

# Points on the way of one command, between its effect, the journal and the ack.
POINTS = ("after_journal_start", "after_effect", "after_journal_done", "after_ack")
# Between the cloud taking a rotated key and the agent replacing its key file.
ROTATION_POINT = "after_key_sent"


def crashpoint(name: str, state_dir: Path) -> None:
    wanted = os.environ.get("DOCKYARD_CRASH_AT")
    if wanted != name:
        return
    marker = state_dir / f".crashed-{name}"
    if marker.exists():
        return
    marker.touch()
    os.kill(os.getpid(), signal.SIGKILL)


# The vault's points, for kill -9 tests of store, prune and repair:
# DOCKYARD_VAULT_CRASH_AT=name:n kills the process the n-th time it passes `name` (counted
# within the process). tests/vault/test_crash.py drives every one of them.
VAULT_POINTS = (
    "pack_put",
    "index_put",
    "snapshot_put",
    "prune_snapshot_delete",
    "prune_pack_put",
    "prune_index_put",
    "prune_index_delete",
    "prune_pack_delete",
    "repair_index_put",
    "repair_index_delete",
    "repair_snapshot_put",
    "repair_snapshot_aside",
)
_passes: dict[str, int] = {}


def vault_point(name: str) -> None:
    wanted = os.environ.get("DOCKYARD_VAULT_CRASH_AT")
    if not wanted:
        return
    point, _, count = wanted.partition(":")
    if point != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
