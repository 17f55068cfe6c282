"""What the modules add to a type the schema builds: each module's GraphQL part (by its
dotted name, `CloudModule.graphql`) may define a class of that name, merged in registry
order after the core's."""

from importlib import import_module
from typing import Protocol

import strawberry

from dockyard.cloud.domain import modules


def module_parts(part: str) -> tuple[type, ...]:
    """Each module's class named `part` (`Query`, `Mutation`, `Dashboard`), in registry order."""
    found = (getattr(import_module(m.graphql), part, None) for m in modules.registry() if m.graphql)
    return tuple(t for t in found if t is not None)


class DashboardRoot(Protocol):
    """What a module's `Dashboard` part's resolvers get as their parent
    (`strawberry.Parent[DashboardRoot]`): the tenant the dashboard is for, its access
    checked already."""

    tenant_id: strawberry.ID
