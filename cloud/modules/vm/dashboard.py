"""The VM module's dashboard figures, from the catalog: VMs by life state, what the archive
stores and what it saved, and the capacity given back by VMs shut down or archived.

A VM counts once, in the state its newest sighting reports (as `Vm.lifeState` shows it);
its vCPUs and memory are its record's. Disk is given back only by an archive (the stub
replaces the VM's files); a VM that is merely off still holds its disks.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dockyard.agent.protocol.vm import LifeState
from dockyard.cloud.domain.context import Ctx
from dockyard.cloud.domain.fleet import Gauge
from dockyard.cloud.domain.modules import Figures
from dockyard.cloud.domain.permissions import Permission as P
from dockyard.cloud.modules.vm import catalog
from dockyard.cloud.store.models import VmSighting

RECLAIMING = frozenset({LifeState.OFF, LifeState.ARCHIVED})
"""The states in which a VM no longer takes its vCPUs and memory from its host."""

WATTS_PER_VCPU = 0.74
WATTS_PER_GIB = 0.392
"""What a VM left idle draws, by the coefficients Cloud Carbon Footprint publishes for an
idle vCPU (its minimum per vCPU) and for a GiB of memory. Only an estimate: the host's own
draw, its cooling (PUE) and its disks are left out, so the figure errs low."""


@dataclass(frozen=True)
class VmFigures:
    by_state: dict[LifeState, int]
    stored_bytes: int
    """What the archives of archived VMs added to their repositories."""
    saved_bytes: int
    """What dedup and compression saved: the archived VMs' size before, less what was stored."""
    vcpus_reclaimed: int
    memory_mb_reclaimed: int
    disk_bytes_reclaimed: int
    power_reclaimed_w: float = 0.0
    """What the VMs now off or archived would draw idle (`WATTS_PER_VCPU`, `WATTS_PER_GIB`)."""
    energy_reclaimed_kwh: float = 0.0
    """That draw over the time each has been off or archived (since its `life_since`)."""


def figures(ctx: Ctx, tenant_id: uuid.UUID) -> VmFigures:
    ctx.principal.require(tenant_id, P.VM_READ)
    grouped: dict[uuid.UUID, list[VmSighting]] = defaultdict(list)
    for s in ctx.session.scalars(select(VmSighting).where(VmSighting.tenant_id == tenant_id)):
        grouped[s.vm_id].append(s)
    newest = [catalog.life_order(group)[-1] for group in grouped.values()]
    by_state: Counter[LifeState] = Counter()
    stored = saved = vcpus = memory = disk = 0
    watts = kwh = 0.0
    now = ctx.now()
    for s in newest:
        state, record, since = LifeState(s.life_state), s.record or {}, s.life_since
        before, kept = s.size_before or 0, s.stored_bytes or 0
        by_state[state] += 1
        if state in RECLAIMING:
            cpus, mib = _int(record.get("cpus")), _int(record.get("memory_mb"))
            vcpus += cpus
            memory += mib
            draw = cpus * WATTS_PER_VCPU + mib / 1024 * WATTS_PER_GIB
            watts += draw
            if since is not None:
                kwh += draw * max((now - since).total_seconds(), 0) / 3600 / 1000
        if state is LifeState.ARCHIVED:
            stored += kept
            saved += max(before - kept, 0)
            disk += before
    counts = {s: by_state.get(s, 0) for s in LifeState}
    return VmFigures(counts, stored, saved, vcpus, memory, disk, watts, kwh)


def sample(ctx: Ctx, tenant_id: uuid.UUID) -> dict[str, float]:
    """The figures the dashboard's charts follow over time (`domain/history.py`): VMs in each
    life state, what the archives hold and saved, and what was reclaimed."""
    f = figures(ctx, tenant_id)
    return {
        **{state.value: float(n) for state, n in f.by_state.items()},
        "stored_bytes": float(f.stored_bytes),
        "saved_bytes": float(f.saved_bytes),
        "vcpus_reclaimed": float(f.vcpus_reclaimed),
        "memory_mb_reclaimed": float(f.memory_mb_reclaimed),
        "disk_bytes_reclaimed": float(f.disk_bytes_reclaimed),
        "energy_reclaimed_kwh": f.energy_reclaimed_kwh,
    }


FIGURES = Figures("vms", P.VM_READ, sample)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def fleet(session: Session) -> list[Gauge]:
    """Archived VMs across every tenant and what their archives hold: a VM two agents report
    counts once (its largest figures)."""
    per_vm = (
        select(
            func.max(VmSighting.size_before).label("before"),
            func.max(VmSighting.stored_bytes).label("stored"),
        )
        .where(VmSighting.life_state == LifeState.ARCHIVED.value)
        .group_by(VmSighting.vm_id)
        .subquery()
    )
    count, before, stored = session.execute(
        select(func.count(), func.sum(per_vm.c.before), func.sum(per_vm.c.stored))
    ).one()
    return [
        Gauge("dockyard_vms_archived", "Archived VMs, every tenant", count or 0),
        Gauge(
            "dockyard_vault_bytes",
            "What archived VMs took before and what their archives store, every tenant",
            before or 0,
            (("kind", "before"),),
        ),
        Gauge(
            "dockyard_vault_bytes",
            "What archived VMs took before and what their archives store, every tenant",
            stored or 0,
            (("kind", "stored"),),
        ),
    ]
