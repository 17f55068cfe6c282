"""Where a VM is in the module's loop, as one state: running, idle, noticed, off, archiving,
archived, restoring (or a failed archive or restore, with its reason).

The first four follow from what the module already keeps (the power state, the idleness
evaluation, an open notice); the archive's states are journalled by the archive engine
(`life` in vm.sqlite) and take precedence, since an archived VM is off too. `vm ls`,
`vm explain` and the inventory records sent up all read this one function.
"""

from __future__ import annotations

from typing import Any

from ...protocol.vm import ArchiveRecord, LifeState

ARCHIVE_STATES = frozenset(
    {
        LifeState.ARCHIVING,
        LifeState.ARCHIVED,
        LifeState.RESTORING,
        LifeState.ARCHIVE_FAILED,
        LifeState.RESTORE_FAILED,
    }
)

Journalled = tuple[LifeState, str | None, ArchiveRecord | None]


def life_of(
    power_state: str,
    evaluation: dict[str, Any] | None,
    noticed: bool,
    journalled: Journalled | None,
) -> tuple[LifeState, str | None, ArchiveRecord | None]:
    record = journalled[2] if journalled else None
    if journalled is not None and journalled[0] in ARCHIVE_STATES:
        return journalled[0], journalled[1], record
    if power_state != "on":
        return LifeState.OFF, None, record
    if noticed:
        return LifeState.NOTICED, None, record
    if (evaluation or {}).get("state") == "idle":
        return LifeState.IDLE, None, record
    return LifeState.RUNNING, None, record


class LifeBook:
    """Every VM's life state at once: the journal and the open notices read one time."""

    def __init__(self, store: Any) -> None:
        from .archive import Journal

        self.journalled = Journal(store).lives()
        self.noticed = {(n.endpoint, n.native_id) for n in store.notices(open_only=True)}

    def of(
        self, endpoint: str, native_id: str, power_state: str, evaluation: dict[str, Any] | None
    ) -> tuple[LifeState, str | None, ArchiveRecord | None]:
        key = (endpoint, native_id)
        return life_of(power_state, evaluation, key in self.noticed, self.journalled.get(key))
