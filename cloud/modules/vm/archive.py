"""Archive and restore from the cloud (issue 17): what the catalog keeps of each VM's life
state and archive, the `vm.archive` / `vm.restore` commands to the agent that reports the
VM, the report of archived VMs, the check that cloud storage needs flow mode `data`, and the
mail a restore's end sends the user who asked for it (once, marked when sent)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dockyard.agent.protocol import FlowMode
from dockyard.agent.protocol.vm import LifeState, StorageKind, VmLifecyclePolicy, VmRecord
from dockyard.cloud.domain import commands, features, text
from dockyard.cloud.domain.clock import Clock
from dockyard.cloud.domain.context import Ctx
from dockyard.cloud.domain.errors import DomainError, Invalid, NotFound
from dockyard.cloud.domain.mail import Mail, Mailer
from dockyard.cloud.domain.pages import Page, PageRequest, keyset
from dockyard.cloud.domain.permissions import Permission as P
from dockyard.cloud.domain.states import CommandState as C
from dockyard.cloud.modules.vm import catalog
from dockyard.cloud.store.models import (
    Agent,
    CatalogVm,
    Command,
    Tenant,
    User,
    VmRestoreMail,
    VmSighting,
)
from dockyard.cloud.store.tenancy import unscoped

FEATURE = "archive"
ARCHIVE_FROM = frozenset({LifeState.OFF, LifeState.ARCHIVE_FAILED})
RESTORE_FROM = frozenset({LifeState.ARCHIVED, LifeState.RESTORE_FAILED})
MAIL_ON = (C.SUCCEEDED.value, C.FAILED.value)


class FeatureLocked(DomainError):
    """The tenant's plan (or flow mode) does not unlock the feature."""

    code = "feature_locked"


class LifeStateForbids(DomainError):
    """The VM's life state does not allow the act asked for."""

    code = "life_state_forbids"


class RestoreRunning(DomainError):
    code = "restore_running"


# --- ingest --------------------------------------------------------------------------------


def life_fields(record: VmRecord) -> dict[str, Any]:
    """The sighting's columns for its life state and archive record."""
    a = record.archive
    return {
        "life_state": record.life_state.value,
        "life_reason": record.life_reason[:500] if record.life_reason else None,
        "archived_at": a.archived_at if a else None,
        "archive_snapshot": a.snapshot[:200] if a else None,
        "archive_repository": a.repository[:500] if a else None,
        "size_before": a.size_before if a else None,
        "stored_bytes": a.stored_bytes if a else None,
        "restore_count": a.restore_count if a else None,
        "restored_at": a.restored_at if a else None,
    }


# --- commands ------------------------------------------------------------------------------


def _sighting(ctx: Ctx, vm_id: uuid.UUID, wanted: frozenset[LifeState]) -> VmSighting:
    """The sighting a command for this catalog VM goes to: the newest one in a state that
    allows it, else the newest one (whose state the refusal then names)."""
    vm = ctx.session.get(CatalogVm, vm_id)
    if vm is None:
        raise NotFound("vm")
    ctx.principal.require(vm.tenant_id, P.VM_POWER, "vm")
    seen = catalog.life_order(
        list(ctx.session.scalars(select(VmSighting).where(VmSighting.vm_id == vm_id)))
    )[::-1]
    if not seen:
        raise NotFound("vm")
    return next((s for s in seen if LifeState(s.life_state) in wanted), seen[0])


def _require_feature(ctx: Ctx, tenant_id: uuid.UUID) -> None:
    tenant = ctx.session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("vm")
    if FEATURE not in features.unlocked(tenant.plan, FlowMode(tenant.flow_mode), ["vm"])["vm"]:
        raise FeatureLocked(f"the {tenant.plan} plan does not unlock VM archiving for this tenant")


def _require_state(s: VmSighting, allowed: frozenset[LifeState], act: str) -> None:
    if LifeState(s.life_state) not in allowed:
        names = " or ".join(sorted(a.value for a in allowed))
        raise LifeStateForbids(f"the VM is {s.life_state}; it can be {act} only when {names}")


def _key(idempotency_key: str | None) -> str | None:
    return text.plain("idempotency key", idempotency_key) if idempotency_key else None


def archive(ctx: Ctx, vm_id: uuid.UUID, *, idempotency_key: str | None = None) -> Command:
    """A `vm.archive` command to the agent that reports the VM; only from off or
    archive_failed, only where the plan unlocks archiving."""
    s = _sighting(ctx, vm_id, ARCHIVE_FROM)
    _require_feature(ctx, s.tenant_id)
    _require_state(s, ARCHIVE_FROM, "archived")
    args = {"endpoint": s.endpoint, "native_id": s.native_id}
    return commands.issue(
        ctx, s.agent_id, "vm.archive", args, idempotency_key=_key(idempotency_key)
    )


def restore(
    ctx: Ctx,
    vm_id: uuid.UUID,
    datastore: str | None,
    *,
    idempotency_key: str | None = None,
) -> Command:
    """A `vm.restore` command; the requesting user is mailed when it ends."""
    if datastore is not None and not 1 <= len(text.plain("datastore", datastore)) <= 200:
        raise Invalid("a datastore name has 1 to 200 characters")
    s = _sighting(ctx, vm_id, RESTORE_FROM)
    _require_feature(ctx, s.tenant_id)
    if s.life_state == LifeState.RESTORING or _open_restore(ctx.session, s) is not None:
        raise RestoreRunning("a restore of this VM is running already")
    _require_state(s, RESTORE_FROM, "restored")
    user = ctx.session.get(User, ctx.principal.id) if ctx.principal.kind == "user" else None
    requested_by = user.email if user is not None else None
    args = {
        "endpoint": s.endpoint,
        "native_id": s.native_id,
        "datastore": datastore,
        "requested_by": requested_by,
    }
    command = commands.issue(
        ctx, s.agent_id, "vm.restore", args, idempotency_key=_key(idempotency_key)
    )
    if requested_by is not None and ctx.session.get(VmRestoreMail, command.id) is None:
        ctx.session.add(
            VmRestoreMail(
                tenant_id=s.tenant_id,
                command_id=command.id,
                requested_by=requested_by,
                vm_name=s.name,
            )
        )
        ctx.session.flush()
    return command


def _open_restore(session: Session, s: VmSighting) -> uuid.UUID | None:
    return session.scalar(
        select(Command.id)
        .where(
            Command.agent_id == s.agent_id,
            Command.name == "vm.restore",
            Command.state.not_in(commands.FINAL_STATES),
            Command.args["native_id"].as_string() == s.native_id,
            Command.args["endpoint"].as_string() == s.endpoint,
        )
        .limit(1)
    )


# --- report --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveTotals:
    vms: int
    bytes_freed: int
    """What the archived VMs took on their datastores: the stub replaced it."""
    bytes_stored: int


def archived(ctx: Ctx, tenant_id: uuid.UUID, request: PageRequest) -> Page[VmSighting]:
    """The tenant's archived VMs (one per sighting), newest archive first."""
    ctx.principal.require(tenant_id, P.VM_READ)
    stmt = select(VmSighting).where(
        VmSighting.tenant_id == tenant_id,
        VmSighting.life_state == LifeState.ARCHIVED.value,
        VmSighting.archived_at.is_not(None),
    )
    return keyset(ctx.session, stmt, VmSighting.archived_at, request, descending=True)


def totals(ctx: Ctx, tenant_id: uuid.UUID) -> ArchiveTotals:
    ctx.principal.require(tenant_id, P.VM_READ)
    n, freed, stored = ctx.session.execute(
        select(
            func.count(VmSighting.id),
            func.coalesce(func.sum(VmSighting.size_before), 0),
            func.coalesce(func.sum(VmSighting.stored_bytes), 0),
        ).where(
            VmSighting.tenant_id == tenant_id,
            VmSighting.life_state == LifeState.ARCHIVED.value,
            VmSighting.archived_at.is_not(None),
        )
    ).one()
    return ArchiveTotals(int(n), int(freed), int(stored))


# --- the policy check ----------------------------------------------------------------------


def check_policy(ctx: Ctx, tenant_id: uuid.UUID, document: dict[str, Any]) -> None:
    """Cloud-managed archive storage moves VM files to the cloud: flow mode `data` only."""
    policy = VmLifecyclePolicy.model_validate(document)
    storage = policy.archive.storage
    if storage is None or storage.kind != StorageKind.CLOUD:
        return
    tenant = ctx.session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("tenant")
    if FlowMode(tenant.flow_mode) is not FlowMode.DATA:
        raise Invalid(
            f"archive storage kind cloud sends VM files to the cloud, which needs flow mode "
            f"data; this tenant's is {tenant.flow_mode}"
        )


# --- the restore mail ----------------------------------------------------------------------


def unsent(session: Session) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(tenant, command) of every ended restore whose requester is not mailed yet."""
    with unscoped(session, "the restore mail loop finds every tenant's ended restores"):
        rows = session.execute(
            select(VmRestoreMail.tenant_id, VmRestoreMail.command_id)
            .join(Command, Command.id == VmRestoreMail.command_id)
            .where(VmRestoreMail.sent_at.is_(None), Command.state.in_(MAIL_ON))
        )
        return [(t, c) for t, c in rows]


def send_one(session: Session, clock: Clock, command_id: uuid.UUID, mailer: Mailer) -> bool:
    """Mails the requester of one ended restore and marks it sent, with the row locked so
    two replicas (or a restart mid-pass) never send it twice. False when already sent."""
    mark = session.scalar(
        select(VmRestoreMail).where(VmRestoreMail.command_id == command_id).with_for_update()
    )
    command = session.get(Command, command_id)
    if mark is None or mark.sent_at is not None or command is None:
        return False
    agent = session.get(Agent, command.agent_id)
    where = f"{command.args.get('endpoint')}/{command.args.get('native_id')}"
    if command.state == C.SUCCEEDED.value:
        subject = f"VM {mark.vm_name} is restored"
        body = f"The VM {mark.vm_name} ({where}) was restored and is back on its datastore.\n"
    else:
        code = command.result_code or "unknown"
        subject = f"VM {mark.vm_name} could not be restored"
        body = (
            f"The restore of VM {mark.vm_name} ({where}) failed with code {code}.\n"
            "The archive and its stub are untouched; the restore can be asked again.\n"
        )
    if agent is not None:
        body += f"Agent: {agent.id}\n"
    mailer(Mail(to=mark.requested_by, subject=subject, body=body))
    mark.sent_at = clock.now()
    return True
