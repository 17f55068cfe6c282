"""What docking unlocks: per plan, per module, the features the cloud switches on.

A module declares what it does alone (its standalone features); docking adds the features
its tenant's plan grants, narrowed by what the tenant's flow mode makes possible (archiving
to cloud storage needs `data`, a catalog needs `metadata`).
"""

from __future__ import annotations

from collections.abc import Iterable

from dockyard.agent.protocol import FlowMode

PLANS: dict[str, dict[str, frozenset[str]]] = {
    "free": {
        "noop": frozenset({"catalog"}),
        "vm": frozenset({"catalog"}),
    },
    "standard": {
        "noop": frozenset({"catalog", "schedules", "reports"}),
        "vm": frozenset({"catalog", "schedules", "reports", "archive"}),
        "backup": frozenset({"catalog", "schedules", "retention"}),
    },
    "enterprise": {
        "noop": frozenset({"catalog", "schedules", "reports", "archive", "dedup", "encryption"}),
        "vm": frozenset({"catalog", "schedules", "reports", "archive", "dedup", "encryption"}),
        "backup": frozenset({"catalog", "schedules", "retention", "dedup", "encryption"}),
        "contentstore": frozenset({"catalog", "dedup", "encryption"}),
        "search": frozenset({"catalog", "search"}),
    },
}

# A feature that moves more than the flow mode allows is not unlocked in that mode.
NEEDS_FLOW: dict[str, FlowMode] = {
    "catalog": FlowMode.METADATA,
    "reports": FlowMode.METADATA,
    "search": FlowMode.METADATA,
}


def unlocked(plan: str, mode: FlowMode, modules: Iterable[str]) -> dict[str, list[str]]:
    grants = PLANS.get(plan, {})
    out: dict[str, list[str]] = {}
    for module in modules:
        feats = grants.get(module, frozenset())
        out[module] = sorted(f for f in feats if mode.allows(NEEDS_FLOW.get(f, FlowMode.CONFIG)))
    return out
