"""What docking unlocks: per plan, per module, the features the cloud switches on.

A module declares what it does alone (its standalone features); docking adds the features
its tenant's plan grants (each module's `plans`, `domain/modules.py`), narrowed by what the
tenant's flow mode makes possible (archiving to cloud storage needs `data`, a catalog needs
`metadata`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from dockyard.agent.protocol import FlowMode

from . import modules as registry

PLANS = ("free", "standard", "enterprise")
"""The plans a tenant may be on; a module grants features per plan."""

# A feature that moves more than the flow mode allows is not unlocked in that mode; a
# module may add its own features' needs.
NEEDS_FLOW: dict[str, FlowMode] = {
    "catalog": FlowMode.METADATA,
    "reports": FlowMode.METADATA,
    "search": FlowMode.METADATA,
}


def unlocked(plan: str, mode: FlowMode, modules: Iterable[str]) -> dict[str, list[str]]:
    table = _table(registry.registry())
    return {name: list(table.get((name, plan, mode), ())) for name in modules}


@functools.lru_cache(maxsize=4)
def _table(
    known: tuple[registry.CloudModule, ...],
) -> dict[tuple[str, str, FlowMode], tuple[str, ...]]:
    """(module, plan, mode) -> the features unlocked, worked out once per registry: a batch
    of polls asks this for every agent in it."""
    out: dict[tuple[str, str, FlowMode], tuple[str, ...]] = {}
    for module in known:
        needs = NEEDS_FLOW | dict(module.needs_flow)
        for plan, feats in module.plans.items():
            if plan not in PLANS:
                raise RuntimeError(f"module {module.name!r} grants features on no plan {plan!r}")
            for mode in FlowMode:
                allowed = (f for f in feats if mode.allows(needs.get(f, FlowMode.CONFIG)))
                out[(module.name, plan, mode)] = tuple(sorted(allowed))
    return out
