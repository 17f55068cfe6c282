"""The dashboard's figures over time: agents by state, open jobs, and each module's own
(`CloudModule.figures`: the VM module's VMs by life state, storage, what was reclaimed).

The figures are aggregates of rows that keep only their present (an agent's last poll, a
VM's newest sighting), so their past cannot be read back later: the `dashboard.history`
timer samples every live tenant's figures and keeps one value per figure and UTC day, the
day's last. A read gives each day of the window, oldest first, with None where nothing was
sampled (the cloud was down, or the tenant was not yet there): never a guessed zero. Today's
point is taken live, so the charts end where the dashboard's cards stand.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, timedelta

from sqlalchemy import delete, select

from dockyard.cloud.store.models import FigureSample, Tenant
from dockyard.cloud.store.tenancy import unscoped

from . import dashboard, modules
from .context import Ctx
from .errors import Refused
from .modules import Figures, Timer, TimerEnv
from .permissions import Permission as P
from .principal import Principal

log = logging.getLogger(__name__)

KEEP = timedelta(days=400)
"""Samples older than this are dropped by the timer: a year's charts, and some slack."""

CORE = (
    Figures(
        "agents",
        P.AGENT_READ,
        lambda ctx, t: {"online": (a := dashboard.agents(ctx, t)).online, "quiet": a.quiet},
    ),
    Figures(
        "jobs",
        P.JOB_READ,
        lambda ctx, t: {"pending": (j := dashboard.jobs(ctx, t)).pending, "running": j.running},
    ),
)


def parts() -> tuple[Figures, ...]:
    return (*CORE, *(m.figures for m in modules.registry() if m.figures is not None))


@dataclass(frozen=True)
class Series:
    name: str
    """`prefix.figure`, as `Figures` names it: `agents.online`, `vms.archived`."""
    values: list[float | None]
    """One per day of the window, oldest first; None where the day has no sample."""


@dataclass(frozen=True)
class History:
    days: list[date]
    series: list[Series]


def now_figures(ctx: Ctx, tenant_id: uuid.UUID, of: tuple[Figures, ...]) -> dict[str, float]:
    return {
        f"{part.prefix}.{name}": float(value)
        for part in of
        for name, value in part.take(ctx, tenant_id).items()
    }


def record(ctx: Ctx, tenant_id: uuid.UUID) -> int:
    """Today's sample of every figure of the tenant, replacing the one taken earlier today;
    returns how many figures were written. The caller holds the tenant's row locked."""
    now = ctx.now()
    day = now.astimezone(UTC).date()
    taken = now_figures(ctx, tenant_id, parts())
    kept = {
        s.name: s
        for s in ctx.session.scalars(
            select(FigureSample).where(FigureSample.tenant_id == tenant_id, FigureSample.day == day)
        )
    }
    for name, value in taken.items():
        if name in kept:
            kept[name].value, kept[name].taken_at = value, now
        else:
            ctx.session.add(
                FigureSample(tenant_id=tenant_id, day=day, name=name, value=value, taken_at=now)
            )
    ctx.session.execute(
        delete(FigureSample).where(
            FigureSample.tenant_id == tenant_id, FigureSample.day < day - KEEP
        )
    )
    return len(taken)


def run(env: TimerEnv) -> Counter[str]:
    """One sample of every live tenant, each in its own transaction with its row locked
    (replicas running the timer at once take turns; a lost race only rewrites the day's
    value). A tenant that fails is logged and left for the next pass."""
    reason = "the history timer lists every live tenant to sample"
    with env.db.transaction() as session, unscoped(session, reason):
        tenants = list(session.scalars(select(Tenant.id).where(Tenant.archived_at.is_(None))))
    done: Counter[str] = Counter()
    for tenant_id in tenants:
        with env.db.transaction([tenant_id]) as session:
            session.scalar(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
            ctx = Ctx(session, Principal.system(frozenset({tenant_id})), env.clock)
            try:
                record(ctx, tenant_id)
                done["sampled"] += 1
            except Exception:
                log.exception("the dashboard figures of tenant %s could not be sampled", tenant_id)
                session.rollback()
                done["error"] += 1
    return done


TIMER = Timer("dashboard.history", lambda s: s.history_interval_s, run)


def history(ctx: Ctx, tenant_id: uuid.UUID, days: int) -> History:
    """The last `days` UTC days with today, oldest first, of every figure the principal may
    read (a part it may not read is left out, as its card would be)."""
    dashboard.check(ctx, tenant_id)
    window = dashboard.window(ctx, days)
    readable = []
    for part in parts():
        try:
            ctx.principal.require(tenant_id, part.permission)
        except Refused:
            continue
        readable.append(part)
    today = window[-1]
    prefixes = tuple(f"{p.prefix}." for p in readable)
    sampled: dict[str, dict[date, float]] = {}
    for s in ctx.session.scalars(
        select(FigureSample).where(
            FigureSample.tenant_id == tenant_id, FigureSample.day >= window[0]
        )
    ):
        if s.name.startswith(prefixes):
            sampled.setdefault(s.name, {})[s.day] = s.value
    live = now_figures(ctx, tenant_id, tuple(readable))
    for name, value in live.items():
        sampled.setdefault(name, {})[today] = value
    # The parts' own order (a part's figures as it gives them), then names no longer given.
    place = {name: n for n, name in enumerate(live)}
    names = sorted(sampled, key=lambda n: (place.get(n, len(place)), n))
    return History(window, [Series(n, [sampled[n].get(d) for d in window]) for n in names])
