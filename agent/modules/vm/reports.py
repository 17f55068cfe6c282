"""What goes up to the cloud, docked: the inventory (as deltas after a full first report,
full again daily or on request), the open decisions and the audit trail, in batches the
flow mode allows; and the record each VM (or host row) becomes.

Nothing here decides anything: the flow mode says what may leave, and a batch the link
cannot send is sent again on the next round (decisions and audit entries under the same
batch id, so the cloud drops a resend).
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from ...errors import FlowModeForbids
from ...protocol import FlowMode, MetadataBatch, vocabulary
from ...protocol.vm import (
    ArchiveRecord,
    Identifiers,
    Idleness,
    LifeState,
    VmLifecyclePolicy,
    VmRecord,
)
from ..base import ModuleContext
from .drivers.base import Inventory, VmInfo
from .life import LifeBook
from .lifecycle import owner_of
from .store import HOST_PREFIX, StoredVm, VmStore, is_host

BATCH_RECORDS = 1000
FULL_REPORT_EVERY = timedelta(days=1)


class Reports:
    def __init__(
        self,
        store: VmStore,
        ctx: ModuleContext,
        policy: Callable[[], VmLifecyclePolicy],
        log: logging.Logger,
    ) -> None:
        self.store, self.ctx, self.policy, self.log = store, ctx, policy, log

    def records(self, now: datetime, include_gone: bool = False) -> list[dict[str, Any]]:
        policy = self.policy()
        stored_vms = self.store.vms(kind="all", include_gone=include_gone)
        clones = possible_clones(stored_vms)
        lives = LifeBook(self.store)
        return [
            record_of(
                stored,
                owner_of(stored, policy),
                stored.evaluation or {},
                now,
                clones.get((stored.endpoint, stored.vm.native_id), []),
                lives.of(
                    stored.endpoint,
                    stored.vm.native_id,
                    stored.vm.power_state,
                    stored.evaluation,
                ),
            )
            for stored in stored_vms
        ]

    def upload_inventory(self, now: datetime, full: bool = False) -> int:
        """Sends what changed since the last report; a full report the first time, once a
        day, or when asked (`full`, the cloud's `vm.report`). Returns records sent."""
        mode = self.ctx.flow_mode()
        if mode is None or not mode.allows(FlowMode.METADATA):
            return 0
        last_full = self.store.mark("full_report_at")
        sent = self.store.sent_digests()
        full = (
            full
            or not sent
            or last_full is None
            or now - datetime.fromisoformat(last_full) >= FULL_REPORT_EVERY
        )
        records, digests = [], {}
        for record in self.records(now, include_gone=True):
            key = (record["endpoint"], record["native_id"])
            digest = record_digest(record)
            if full or sent.get(key) != digest:
                records.append(record)
                digests[key] = digest
        count = self.upload("vm.inventory", records, now)
        if count == len(records):
            self.store.set_sent_digests(digests, full)
            if full:
                self.store.set_mark("full_report_at", now.isoformat())
        return count

    def install_id(self) -> str:
        """A random id of this module's store, so two agents' audit batches never collide."""
        found = self.store.mark("install_id")
        if found is None:
            found = str(uuid.uuid4())
            self.store.set_mark("install_id", found)
        return found

    def upload_audit(self) -> int:
        """The audit trail goes up to the cloud's audit log when docked: whole from
        `metadata` up, reduced to codes, closed words and counts in `config` mode (the
        cloud then learns that a shutdown was refused and why, never which VM)."""
        mode = self.ctx.flow_mode()
        if mode is None:
            return 0
        entries = self.store.audits(unsent_only=True, limit=BATCH_RECORDS)
        if not entries:
            return 0
        if not mode.allows(FlowMode.METADATA):
            entries = [vocabulary.audit_codes_only(e, "vm") for e in entries]
        sent = self.upload("vm.audit", entries, self.ctx.clock())
        if sent == len(entries):
            self.store.mark_audits_sent([int(e["id"]) for e in entries])
        return sent

    def upload(self, kind: str, records: list[dict[str, Any]], now: datetime) -> int:
        """Sends `records` as `kind` batches of at most BATCH_RECORDS; returns how many
        went up before the flow mode or the link stopped them."""
        sent = 0
        for start in range(0, len(records), BATCH_RECORDS):
            chunk = records[start : start + BATCH_RECORDS]
            # Decisions and audit entries are sent once each: the same ones give the same
            # batch id, so a resend is a duplicate. An inventory is a new report every time.
            if kind == "vm.decision":
                ids = sorted(str(r.get("decision_id", "")) for r in chunk)
                batch_id = uuid.uuid5(uuid.NAMESPACE_URL, "vm-decisions:" + ",".join(ids))
            elif kind == "vm.audit":
                ids = sorted(str(r.get("id", "")) for r in chunk)
                name = f"vm-audit:{self.install_id()}:" + ",".join(ids)
                batch_id = uuid.uuid5(uuid.NAMESPACE_URL, name)
            else:
                batch_id = uuid.uuid4()
            try:
                self.ctx.upload(
                    MetadataBatch(batch_id=batch_id, module="vm", kind=kind, records=chunk)
                )
            except FlowModeForbids:
                return sent
            except Exception as e:  # the link retries on the next round
                self.log.warning("could not send %s: %s", kind, e)
                return sent
            sent += len(chunk)
        return sent


def host_rows(inventory: Inventory) -> list[VmInfo]:
    """Each hypervisor host as a row beside the VMs, so it shares their history, notices
    and safety net."""
    return [
        VmInfo(
            native_id=f"{HOST_PREFIX}{h.native_id}",
            name=h.name,
            power_state="on" if h.connected else "off",
            host=None,
            datastores=(),
            cpus=h.cpus,
            memory_mb=h.memory_mb,
            identifiers=Identifiers(),
            tags={"kind": "host", **({"maintenance": "yes"} if h.maintenance else {})},
        )
        for h in inventory.hosts
    ]


def possible_clones(stored: list[StoredVm]) -> dict[tuple[str, str], list[str]]:
    """VMs sharing a BIOS UUID while their other identifiers differ (a clone, or a copy
    registered twice): each gets the others' `endpoint/native-id`. They stay separate VMs,
    and a command still reaches only the one it addresses."""
    by_bios: dict[str, list[StoredVm]] = {}
    for s in stored:
        bios = (s.vm.identifiers.bios_uuid or "").lower()
        if bios and not is_host(s.vm.native_id):
            by_bios.setdefault(bios, []).append(s)
    out: dict[tuple[str, str], list[str]] = {}
    for group in by_bios.values():
        for s in group:
            others = sorted(
                f"{o.endpoint}/{o.vm.native_id}"
                for o in group
                if o is not s and s.vm.identifiers.possible_clone_of(o.vm.identifiers)
            )
            if others:
                out[(s.endpoint, s.vm.native_id)] = others
    return out


def record_digest(record: dict[str, Any]) -> str:
    """What a record says, without when it was seen or last judged: a change of this is
    worth sending (a new day judged is; the same verdict again an hour later is not)."""
    body = {k: v for k, v in record.items() if k != "seen_at"}
    if isinstance(body.get("idleness"), dict):
        body["idleness"] = {k: v for k, v in body["idleness"].items() if k != "at"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]


def record_of(
    stored: StoredVm,
    owner: str | None,
    evaluation: dict[str, Any],
    now: datetime,
    clone_of: list[str] | None = None,
    life: tuple[LifeState, str | None, ArchiveRecord | None] | None = None,
) -> dict[str, Any]:
    vm = stored.vm
    life_state, life_reason, archived = life or (LifeState.RUNNING, None, None)
    return VmRecord(
        endpoint=stored.endpoint,
        native_id=vm.native_id,
        name=vm.name,
        kind="host" if is_host(vm.native_id) else "vm",
        power_state=vm.power_state if stored.gone_at is None else "gone",
        host=vm.host,
        datastores=list(vm.datastores),
        cpus=vm.cpus,
        memory_mb=vm.memory_mb,
        identifiers=vm.identifiers,
        owner=owner,
        tags={k: v for k, v in vm.tags.items() if k != "annotation"},
        last_active_at=stored.last_active_at,
        idle_state=evaluation.get("state", "unknown"),
        seen_at=stored.last_seen,
        possible_clone_of=clone_of or [],
        life_state=life_state,
        life_reason=life_reason,
        archive=archived,
        idleness=idleness_of(evaluation),
    ).model_dump(mode="json")


def idleness_of(evaluation: dict[str, Any]) -> Idleness | None:
    """The stored evaluation as the record carries it; None before the first evaluation.
    One stored by an older agent lacks thresholds and days, and goes up without them."""
    if "at" not in evaluation or len(evaluation.get("window") or ()) != 2:
        return None
    start, end = evaluation["window"]
    return Idleness(
        state=evaluation.get("state", "unknown"),
        at=evaluation["at"],
        window_start=start,
        window_end=end,
        reasons=evaluation.get("reasons", []),
        thresholds=evaluation.get("thresholds", {}),
        statistics=evaluation.get("statistics", {}),
        days=evaluation.get("days", []),
    )
