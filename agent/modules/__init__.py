"""Modules: each a folder of the same shape; `noop` is the smallest one to copy.

Modules never import each other. `registry()` names the modules this agent carries.
"""

from __future__ import annotations

from .base import Module


def registry() -> dict[str, type[Module]]:
    from .noop import NoopModule
    from .vm import VmModule

    return {NoopModule.name: NoopModule, VmModule.name: VmModule}
