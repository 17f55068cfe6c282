"""Each agent module's cloud side, a folder of its own; `registry()` lists them, one line each.

A module's folder holds its policy models, what its metadata feeds, its timers, the features
each plan grants it and its GraphQL part, declared once as a `CloudModule`
(`domain/modules.py`) in its `__init__.py`. The domain's rules, the scheduler and the
GraphQL schema iterate the registry and name no module. Modules never import each other.
`noop` is the one to copy; `vm` the large one. See docs/adding-a-module.md.
"""

from __future__ import annotations

import functools

from dockyard.cloud.domain.modules import CloudModule


@functools.cache
def registry() -> tuple[CloudModule, ...]:
    from .noop import MODULE as noop
    from .vm import MODULE as vm

    return (noop, vm)
