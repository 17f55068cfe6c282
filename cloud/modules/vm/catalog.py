"""The tenant's VM catalog: every agent's sightings of its VMs, merged into one record per VM.

Two sightings are the same VM only when at least two identifiers agree (instance UUID, BIOS
UUID, a MAC address, EC2 instance id). One identifier is not enough: clones share a BIOS
UUID, and a cloned NIC may keep its MAC. Two sightings by the same agent on the same
endpoint are different VMs by definition (the hypervisor gave them different ids), but for
one the agent itself links: a VM its restore gave a new id (an EC2 instance launched from
its archive's AMI) names the id it was archived under (`archive.restored_from`), and joins
that sighting's VM, so the catalog VM, its history and its archive figures go on. A
sighting that matches two different VMs is not merged at all: the conflict is written on
its record for a person to see. A person can split a sighting off (undo a merge); it is then
never merged automatically again.

The catalog is for display and reports. A command always addresses one sighting's
(agent, endpoint, native id), never a merged record.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from dockyard.agent.protocol.vm import (
    MIN_AGREEING,
    Decision,
    PowerAction,
    VmRecord,
    identifier_keys,
)
from dockyard.agent.protocol.vocabulary import VmAuditAction
from dockyard.cloud.domain import agents, audit, commands, text
from dockyard.cloud.domain.context import Ctx
from dockyard.cloud.domain.errors import Invalid, NotFound
from dockyard.cloud.domain.pages import Page, PageRequest, keyset
from dockyard.cloud.domain.permissions import Permission as P
from dockyard.cloud.store.models import Agent, CatalogVm, VmDecision, VmSighting

from . import archive


def identifiers(ids: dict[str, Any]) -> set[str]:
    return identifier_keys(ids)


def ingest_inventory(ctx: Ctx, agent: Agent, records: list[dict[str, Any]]) -> int:
    """Upserts the agent's sightings and (re)merges them. Returns how many were stored."""
    now = ctx.now()
    parsed: list[VmRecord] = []
    for raw in records:
        try:
            parsed.append(VmRecord.model_validate(raw))
        except ValidationError as e:
            raise Invalid(f"a vm.inventory record is malformed: {e.errors()[0]['msg']}") from None
    tenant = agent.tenant_id
    sightings = list(ctx.session.scalars(select(VmSighting).where(VmSighting.tenant_id == tenant)))
    by_key = {(s.agent_id, s.endpoint, s.native_id): s for s in sightings}
    for record in parsed:
        key = (agent.id, record.endpoint, record.native_id)
        sighting = by_key.get(key)
        fields = {
            "name": record.name[:200],
            "power_state": record.power_state[:16],
            "host": record.host,
            "owner": record.owner,
            "idle_state": record.idle_state.value,
            "last_active_at": record.last_active_at,
            "identifiers": record.identifiers.model_dump(),
            "record": record.model_dump(mode="json"),
            "seen_at": record.seen_at,
            **archive.life_fields(record),
        }
        if (
            sighting is None
            or sighting.life_state != fields["life_state"]
            or sighting.life_since is None  # a row from before migration 0008: from now on
        ):
            fields["life_since"] = record.seen_at
        if sighting is None:
            vm = CatalogVm(tenant_id=tenant, name=record.name[:200], created_at=now, updated_at=now)
            ctx.session.add(vm)
            ctx.session.flush()
            sighting = VmSighting(
                tenant_id=tenant,
                agent_id=agent.id,
                endpoint=record.endpoint,
                native_id=record.native_id,
                vm_id=vm.id,
                pinned=False,
                **fields,
            )
            ctx.session.add(sighting)
            sightings.append(sighting)
            by_key[key] = sighting
        else:
            for name, value in fields.items():
                setattr(sighting, name, value)
    ctx.session.flush()
    _merge(ctx, sightings, {by_key[(agent.id, r.endpoint, r.native_id)].id for r in parsed}, now)
    return len(parsed)


def _merge(ctx: Ctx, sightings: list[VmSighting], changed: set[uuid.UUID], now: datetime) -> None:
    index: dict[str, list[VmSighting]] = defaultdict(list)
    for s in sightings:
        for ident in identifiers(s.identifiers):
            index[ident].append(s)
    for s in sightings:
        if s.id not in changed or s.pinned:
            continue
        before = _restored_from(sightings, s)
        if before is not None:  # the agent's own link: the same VM under its new id
            if before.vm_id != s.vm_id:
                _move(ctx, s, before.vm_id, now)
            continue
        after = next((o for o in sightings if _restored_from(sightings, o) is s), None)
        if after is not None:  # the same link seen from the old id: never split it off
            if after.vm_id != s.vm_id and not after.pinned:
                _move(ctx, after, s.vm_id, now)
            continue
        mine = identifiers(s.identifiers)
        agreeing: dict[uuid.UUID, int] = defaultdict(int)
        others: dict[uuid.UUID, VmSighting] = {}
        for ident in mine:
            for other in index[ident]:
                if other.id == s.id or other.pinned:
                    continue
                if other.agent_id == s.agent_id and other.endpoint == s.endpoint:
                    continue  # one hypervisor's two ids are two VMs
                agreeing[other.id] += 1
                others[other.id] = other
        matches = {others[o].vm_id for o, n in agreeing.items() if n >= MIN_AGREEING}
        if len(matches) > 1:
            vm = ctx.session.get(CatalogVm, s.vm_id)
            if vm is not None:
                names = ", ".join(sorted(str(m) for m in matches))
                vm.conflict = (
                    f"sighting {s.agent_id}/{s.endpoint}/{s.native_id} matches several VMs "
                    f"({names}) on two or more identifiers: not merged"
                )
                vm.updated_at = now
            continue
        if len(matches) == 1:
            target = next(iter(matches))
            if target != s.vm_id:
                _move(ctx, s, target, now)
        elif _shared(sightings, s):
            vm = CatalogVm(tenant_id=s.tenant_id, name=s.name, created_at=now, updated_at=now)
            ctx.session.add(vm)
            ctx.session.flush()
            _move(ctx, s, vm.id, now)
    ctx.session.flush()


def _restored_from(sightings: list[VmSighting], s: VmSighting) -> VmSighting | None:
    """The sighting, by the same agent on the same endpoint, of the id `s` was archived
    under before its restore gave it a new one; None if there is no such link (or it
    names `s` itself, or a sighting a person split off)."""
    archive = (s.record or {}).get("archive") or {}
    old = archive.get("restored_from")
    if not isinstance(old, str) or old == s.native_id:
        return None
    return next(
        (
            o
            for o in sightings
            if o.agent_id == s.agent_id
            and o.endpoint == s.endpoint
            and o.native_id == old
            and not o.pinned
        ),
        None,
    )


def life_order(sightings: list[VmSighting]) -> list[VmSighting]:
    """Oldest first, so the last is the one that says what the VM is now.

    By `seen_at`, except that a sighting a restore superseded (its VM came back under a new
    id whose record names it in `restored_from`) goes before every other: the agent may go
    on reporting the old, archived id in the same inventory as the new one, with the same
    `seen_at`, and that tie must not make the archived instance the VM's present.
    """
    superseded = {p.id for o in sightings if (p := _restored_from(sightings, o)) is not None}
    return sorted(sightings, key=lambda s: (s.id not in superseded, s.seen_at))


def _shared(sightings: list[VmSighting], s: VmSighting) -> bool:
    return any(o.vm_id == s.vm_id and o.id != s.id for o in sightings)


def _move(ctx: Ctx, s: VmSighting, target: uuid.UUID, now: datetime) -> None:
    old = s.vm_id
    s.vm_id = target
    ctx.session.flush()
    remaining = ctx.session.scalar(select(VmSighting.id).where(VmSighting.vm_id == old).limit(1))
    if remaining is None:
        orphan = ctx.session.get(CatalogVm, old)
        if orphan is not None:
            ctx.session.delete(orphan)


def split(ctx: Ctx, sighting_id: uuid.UUID) -> VmSighting:
    """Undo a merge: the sighting gets a record of its own and is never merged again."""
    sighting = ctx.session.get(VmSighting, sighting_id)
    if sighting is None:
        raise NotFound("sighting")
    ctx.principal.require(sighting.tenant_id, P.VM_SPLIT, "sighting")
    now = ctx.now()
    vm = CatalogVm(tenant_id=sighting.tenant_id, name=sighting.name, created_at=now, updated_at=now)
    ctx.session.add(vm)
    ctx.session.flush()
    sighting.pinned = True
    _move(ctx, sighting, vm.id, now)
    audit.record(ctx, sighting.tenant_id, "vm.split", target=str(sighting.id))
    return sighting


@dataclass
class CatalogEntry:
    vm: CatalogVm
    sightings: list[VmSighting]
    clones: dict[uuid.UUID, list[uuid.UUID]]
    """Per sighting, the sightings of other VMs sharing its BIOS UUID (a clone, or a copy
    registered twice): shown as a flag, never merged, and a command still names one."""


def possible_clones(ctx: Ctx, tenant_id: uuid.UUID) -> dict[uuid.UUID, list[uuid.UUID]]:
    """Sightings that share a BIOS UUID with a sighting of another catalog VM (whichever
    agent saw them), each with those others' ids."""
    by_bios: dict[str, list[tuple[uuid.UUID, uuid.UUID]]] = defaultdict(list)
    rows = ctx.session.execute(
        select(VmSighting.id, VmSighting.vm_id, VmSighting.identifiers).where(
            VmSighting.tenant_id == tenant_id
        )
    )
    for sighting_id, vm_id, ids in rows:
        bios = str((ids or {}).get("bios_uuid") or "").lower()
        if bios:
            by_bios[bios].append((sighting_id, vm_id))
    out: dict[uuid.UUID, list[uuid.UUID]] = {}
    for group in by_bios.values():
        for sighting_id, vm_id in group:
            others = sorted((o for o, other_vm in group if other_vm != vm_id), key=str)
            if others:
                out[sighting_id] = others
    return out


def catalog(
    ctx: Ctx,
    tenant_id: uuid.UUID,
    *,
    power_state: str | None = None,
    host: str | None = None,
    owner: str | None = None,
    idle_state: str | None = None,
    request: PageRequest,
) -> Page[CatalogEntry]:
    """The tenant's catalog by name; each filter matches any of a VM's sightings."""
    ctx.principal.require(tenant_id, P.VM_READ)
    for field, value in (("powerState", power_state), ("host", host), ("owner", owner)):
        if value is not None:
            text.plain(field, value)  # PostgreSQL refuses a NUL in text: say so, not a 500
    stmt = select(VmSighting).where(VmSighting.tenant_id == tenant_id)
    if power_state is not None:
        stmt = stmt.where(VmSighting.power_state == power_state)
    if host is not None:
        stmt = stmt.where(VmSighting.host == host)
    if owner is not None:
        stmt = stmt.where(VmSighting.owner == owner)
    if idle_state is not None:
        stmt = stmt.where(VmSighting.idle_state == idle_state)
    wanted = select(stmt.with_only_columns(VmSighting.vm_id).subquery().c.vm_id)
    page = keyset(
        ctx.session, select(CatalogVm).where(CatalogVm.id.in_(wanted)), CatalogVm.name, request
    )
    vms = page.items
    if not vms:
        return page.map(lambda v: CatalogEntry(v, [], {}))
    grouped: dict[uuid.UUID, list[VmSighting]] = defaultdict(list)
    for s in ctx.session.scalars(
        select(VmSighting).where(VmSighting.vm_id.in_([v.id for v in vms]))
    ):
        grouped[s.vm_id].append(s)
    for vm_id, group in grouped.items():
        grouped[vm_id] = life_order(group)
    clones = possible_clones(ctx, tenant_id)
    return page.map(
        lambda v: CatalogEntry(
            v, grouped[v.id], {s.id: clones[s.id] for s in grouped[v.id] if s.id in clones}
        )
    )


def entry(ctx: Ctx, vm_id: uuid.UUID) -> CatalogEntry:
    """One VM of the catalog with its sightings in life order; NotFound("vm") for a VM out
    of sight (another tenant's is filtered out by the session's scope, so it reads alike)."""
    vm = ctx.session.get(CatalogVm, vm_id)
    if vm is None:
        raise NotFound("vm")
    ctx.principal.require(vm.tenant_id, P.VM_READ, "vm")
    sightings = life_order(
        list(ctx.session.scalars(select(VmSighting).where(VmSighting.vm_id == vm_id)))
    )
    clones = possible_clones(ctx, vm.tenant_id)
    return CatalogEntry(vm, sightings, {s.id: clones[s.id] for s in sightings if s.id in clones})


# --- decisions ---------------------------------------------------------------------------


def ingest_decisions(ctx: Ctx, agent: Agent, records: list[dict[str, Any]]) -> int:
    now = ctx.now()
    stored = 0
    for raw in records:
        try:
            d = Decision.model_validate(raw)
        except ValidationError as e:
            raise Invalid(f"a vm.decision record is malformed: {e.errors()[0]['msg']}") from None
        exists = ctx.session.scalar(
            select(VmDecision.id).where(
                VmDecision.agent_id == agent.id, VmDecision.decision_id == d.decision_id
            )
        )
        if exists is not None:
            continue
        ctx.session.add(
            VmDecision(
                tenant_id=agent.tenant_id,
                agent_id=agent.id,
                decision_id=d.decision_id,
                endpoint=d.endpoint,
                native_id=d.native_id,
                vm_name=d.vm_name,
                state=d.state.value,
                action=d.proposed_action.value if d.proposed_action else None,
                owner=d.owner,
                reasons=list(d.reasons),
                window_start=d.window_start,
                window_end=d.window_end,
                notice_hours=d.notice_hours,
                status="proposed",
                received_at=now,
            )
        )
        stored += 1
    ctx.session.flush()
    return stored


AGENT_AUDIT = frozenset(str(a) for a in VmAuditAction)
"""What an agent's VM module writes to its audit trail, and so may write to the tenant's."""


def ingest_audit(ctx: Ctx, agent: Agent, records: list[dict[str, Any]]) -> int:
    """The agent's trail (its refusals, actions, approvals, refused links) into the tenant's
    audit log, each entry marked as the agent's, with the time the agent wrote it."""
    for raw in records:
        action, outcome = raw.get("action"), raw.get("outcome")
        detail = raw.get("detail")
        if action not in AGENT_AUDIT or not isinstance(outcome, str) or len(outcome) > 16:
            raise Invalid(f"a vm.audit record names no known action: {str(action)[:64]!r}")
        if not isinstance(detail, dict):
            raise Invalid("a vm.audit record's detail is an object")
        target = raw.get("target")
        fields = {str(k)[:64]: v for k, v in detail.items()}
        for taken in ("action", "target", "outcome", "ctx", "tenant_id"):
            if taken in fields:  # the record's own arguments; the agent's keep a prefix
                fields[f"agent_{taken}"] = fields.pop(taken)
        audit.record(
            ctx,
            agent.tenant_id,
            f"agent.{action}",
            target=f"{agent.id}/{target}"[:200] if target else str(agent.id),
            outcome=outcome,
            agent_id=str(agent.id),
            agent_at=str(raw.get("at", ""))[:40],
            **fields,
        )
    return len(records)


def decisions(
    ctx: Ctx, tenant_id: uuid.UUID, request: PageRequest, *, status: str | None = None
) -> Page[VmDecision]:
    """The tenant's VM decisions, newest first, optionally in one status."""
    ctx.principal.require(tenant_id, P.VM_READ)
    stmt = select(VmDecision).where(VmDecision.tenant_id == tenant_id)
    if status is not None:
        stmt = stmt.where(VmDecision.status == status)
    return keyset(ctx.session, stmt, VmDecision.received_at, request, descending=True)


def power(ctx: Ctx, sighting_id: uuid.UUID, action: str, decision: VmDecision | None = None) -> Any:
    """A `vm.power` command to the agent that saw the VM, for its (endpoint, native id)."""
    try:
        wanted = PowerAction(action)
    except ValueError:
        choices = ", ".join(a.value for a in PowerAction)
        raise Invalid(f"action is one of {choices}") from None
    sighting = ctx.session.get(VmSighting, sighting_id)
    if sighting is None:
        raise NotFound("sighting")
    ctx.principal.require(sighting.tenant_id, P.VM_POWER, "sighting")
    agents.get(ctx, sighting.agent_id)
    return commands.issue(
        ctx,
        sighting.agent_id,
        "vm.power",
        {"endpoint": sighting.endpoint, "native_id": sighting.native_id, "action": wanted.value},
    )
