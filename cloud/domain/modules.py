"""What a module's cloud side declares, and the lookups the domain's rules make over all of
them: which model checks a policy kind, what a metadata batch also feeds, what a plan grants.

A module is a folder under `cloud/modules/` and one line in its `registry()`; nothing here
or in the rules names a module. The registry is read when a rule asks, not when this file
loads: the modules build on the domain (their ingest and timers are domain code), so the
domain may not import them as it loads.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from dockyard.agent.protocol import FlowMode
from dockyard.cloud.settings import Settings
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import Agent

from .clock import Clock
from .context import Ctx
from .permissions import Permission

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .fleet import Gauge

Ingest = Callable[[Ctx, Agent, list[dict[str, Any]]], object]
"""Feeds one accepted metadata batch's records into the module's own tables, in the batch's
transaction: a record it refuses (raising a domain error) stores nothing of the batch."""

PolicyCheck = Callable[[Ctx, Any, dict[str, Any]], None]
"""(ctx, tenant id, the validated document): raises `Invalid` when the tenant cannot have it."""


@dataclass(frozen=True)
class TimerEnv:
    """What a timer works with. It opens its own transactions, scoped to each tenant it
    acts for (`db.transaction([tenant])`), and reads time only from `clock`."""

    db: Database
    clock: Clock
    settings: Settings


@dataclass(frozen=True)
class Timer:
    """Work the cloud does on its own, every `every_s(settings)` seconds, on every replica:
    `run` must be safe when replicas run it at once (lock what it advances). It returns
    counts by outcome, for the log and the tests."""

    name: str
    every_s: Callable[[Settings], float]
    run: Callable[[TimerEnv], Mapping[str, int]]


@dataclass(frozen=True)
class Figures:
    """A part of the tenant's dashboard that keeps a history (`history.py` samples it each
    day): `take` gives its figures now, by name, each stored as `prefix.name`; reading them,
    now or back in time, needs `permission`."""

    prefix: str
    permission: Permission
    take: Callable[[Ctx, uuid.UUID], Mapping[str, float]]


@dataclass(frozen=True, eq=False)
class CloudModule:
    """A module's cloud side. `name` is the module's name on the agent, as it announces it
    when docking and on its metadata batches. (Compared by identity: what is worked out
    from the registry is kept per registry.)"""

    name: str
    policies: Mapping[str, type[BaseModel]] = field(default_factory=dict)
    """Policy kind -> the document's model; a document is stored as the model dumps it."""
    ingest: Mapping[str, Ingest] = field(default_factory=dict)
    """Metadata batch kind -> what it feeds besides the batch store."""
    timers: tuple[Timer, ...] = ()
    plans: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Plan -> the features it unlocks for this module (features.PLANS names the plans)."""
    needs_flow: Mapping[str, FlowMode] = field(default_factory=dict)
    """A feature of this module that moves more than `config` allows -> the mode it needs."""
    policy_checks: Mapping[str, PolicyCheck] = field(default_factory=dict)
    """Policy kind -> a check of a valid document against its tenant (its flow mode, say),
    raising `Invalid` with a sentence; run when a version is written."""
    graphql: str | None = None
    """The dotted name of the module's GraphQL part: a Python module whose `Query` and
    `Mutation` (either may be absent) the schema merges. By name, so the domain's imports
    never reach the transport."""
    fleet: Callable[[Session], list[Gauge]] | None = None
    """The module's figures across every tenant for the operator's /metrics (counts and
    sums only: `fleet.py` says why this may look past the tenancy wall)."""
    figures: Figures | None = None
    """The module's dashboard figures that the charts follow over time."""
    routes: str | None = None
    """The dotted name of the module's HTTP part: a Python module whose `routes()` gives the
    starlette routes the app mounts (pages outside GraphQL and the agent API). By name, as
    `graphql`."""


def registry() -> tuple[CloudModule, ...]:
    from dockyard.cloud import modules

    return modules.registry()


def policy_models() -> dict[str, type[BaseModel]]:
    """Every module's policy kinds; a kind two modules claim is refused."""
    out: dict[str, type[BaseModel]] = {}
    for module in registry():
        for kind, model in module.policies.items():
            if kind in out:
                raise RuntimeError(f"policy kind {kind!r} is declared by two modules")
            out[kind] = model
    return out


def ingest(module: str, kind: str) -> Ingest | None:
    for m in registry():
        if m.name == module:
            return m.ingest.get(kind)
    return None


def check_policy(ctx: Ctx, tenant_id: Any, kind: str, document: dict[str, Any]) -> None:
    """Every module's tenant check for a policy document of this kind."""
    for module in registry():
        check = module.policy_checks.get(kind)
        if check is not None:
            check(ctx, tenant_id, document)
