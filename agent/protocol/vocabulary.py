"""The closed vocabulary of `config` flow mode: every result code and count key a module may
send up, declared once per module, here, where both the agent and the cloud read it.

In `config` mode the cloud refuses (403, audited) any ack code, job event code or count key
outside these enumerations: a pattern alone would admit `salaries-2024.xlsx` or
`alice.smith`, and a closed list admits no name at all. The agent maps a code it did not
declare to `undeclared` before sending it in `config` mode, so it never gets refused for
its own drivers' wording. From `metadata` up any `Code` passes, as before.

A module's audit trail goes up in `config` mode too, reduced to the same codes, closed
words and counts (`audit_codes_only`): the tenant's log learns that a shutdown was refused
and why, not which VM.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from . import MetadataBatch
from .vm import PowerAction


class CommonCode(enum.StrEnum):
    """Codes the runner itself sends, for a command of any module."""

    OK = "ok"
    AGENT_ERROR = "agent_error"
    INTERRUPTED = "interrupted"
    EXPIRED = "expired"
    UNKNOWN_COMMAND = "unknown_command"
    UNDECLARED = "undeclared"
    """A module's code that is not in its enumeration, as sent in `config` mode."""
    BAD_ARGS = "bad_args"
    NOT_FOUND = "not_found"
    FLOW_MODE_FORBIDS = "flow_mode_forbids"


class NoopCode(enum.StrEnum):
    REQUESTED_FAILURE = "requested_failure"


class NoopCount(enum.StrEnum):
    LINES = "lines"
    RECORDS = "records"


class VmCode(enum.StrEnum):
    """The vm module's codes: its commands', its drivers' and its safety net's."""

    ALREADY_ARCHIVED = "already_archived"
    AMBIGUOUS = "ambiguous"
    ARCHIVE_DAMAGED = "archive_damaged"
    ARCHIVE_MISMATCH = "archive_mismatch"
    AWS_ERROR = "aws_error"
    AWS_FAILED = "aws_failed"
    AWS_TIMEOUT = "aws_timeout"
    BACKING_MISSING = "backing_missing"
    BAD_CONFIG = "bad_config"
    BAD_PATH = "bad_path"
    BAD_PLACEMENT = "bad_placement"
    BAD_POLICY = "bad_policy"
    BMC_ERROR = "bmc_error"
    BUSY = "busy"
    CREATE_FAILED = "create_failed"
    DATASTORE_ERROR = "datastore_error"
    DATASTORE_FULL = "datastore_full"
    DATASTORE_NOT_FOUND = "datastore_not_found"
    DRIVER_MISSING = "driver_missing"
    ENDPOINT_UNREACHABLE = "endpoint_unreachable"
    FEATURE_LOCKED = "feature_locked"
    FILE_NOT_FOUND = "file_not_found"
    HARDWARE_MISMATCH = "hardware_mismatch"
    HOST_IN_MAINTENANCE = "host_in_maintenance"
    IMAGE_CHANGED = "image_changed"
    IMAGE_INCOMPLETE = "image_incomplete"
    IMAGE_MISSING = "image_missing"
    INVALID_POWER_STATE = "invalid_power_state"
    INVALID_STATE = "invalid_state"
    LIBVIRT_ERROR = "libvirt_error"
    LOGIN_FAILED = "login_failed"
    NAME_TAKEN = "name_taken"
    NO_PLACEMENT = "no_placement"
    NO_POWER_INTERFACE = "no_power_interface"
    NO_STORAGE = "no_storage"
    NOT_ARCHIVED = "not_archived"
    NOT_DUE = "not_due"
    NOT_SUPPORTED = "not_supported"
    NOTHING_TO_RESTORE = "nothing_to_restore"
    OVER_BUDGET = "over_budget"
    REFUSED_BY_POLICY = "refused_by_policy"
    REFUSED_BY_SAFETY_NET = "refused_by_safety_net"
    REPOSITORY_FULL = "repository_full"
    REPOSITORY_UNREACHABLE = "repository_unreachable"
    SHORT_SOURCE = "short_source"
    SINGLE_KEY_SLOT = "single_key_slot"
    SNAPSHOT_INCOMPLETE = "snapshot_incomplete"
    STUB_FOREIGN = "stub_foreign"
    STUB_INVALID = "stub_invalid"
    STUB_ORPHANED = "stub_orphaned"
    STUB_TAMPERED = "stub_tampered"
    TASK_FAILED = "task_failed"
    TIMEOUT = "timeout"
    UNKNOWN_ENDPOINT = "unknown_endpoint"
    VAULT_ERROR = "vault_error"
    VM_ARCHIVED = "vm_archived"
    VM_CHANGED = "vm_changed"
    VM_NOT_FOUND = "vm_not_found"


class VmCount(enum.StrEnum):
    ACTED = "acted"
    APPROVED = "approved"
    DECISIONS = "decisions"
    ENDPOINTS = "endpoints"
    FAILED = "failed"
    HELD = "held"
    IDLE = "idle"
    POOL = "pool"
    PROPOSED = "proposed"
    VMS = "vms"


class VmAuditAction(enum.StrEnum):
    """What the vm module writes to its audit trail, and so what may reach the tenant's."""

    POWER = "vm.power"
    LINK = "vm.link"
    LINK_SKIP = "vm.link.skip"
    LINK_DELAY = "vm.link.delay"
    APPROVE = "vm.approve"
    BUDGET_SPENT = "vm.budget.spent"


class AuditOutcome(enum.StrEnum):
    OK = "ok"
    REFUSED = "refused"
    NOT_SENT = "not_sent"


AUDIT_WORDS: dict[str, frozenset[str]] = {
    "source": frozenset({"notice", "shell", "cloud", "link"}),
    "paid_by": frozenset({"budget", "approval"}),
    "action": frozenset(str(a) for a in PowerAction),
}
"""Detail fields of an audit entry whose values are words from a closed list."""
AUDIT_COUNTS = frozenset({"count", "pool", "budget", "in_scope"})
"""Detail fields of an audit entry that are plain counts."""


def audit_codes_only(entry: dict[str, object], module: str = "vm") -> dict[str, object]:
    """One entry of a module's audit trail as `config` mode lets it up: its opaque id, time,
    action and outcome, and of its detail only codes, closed words and counts. The target
    (a VM), reasons, mail addresses and who approved stay on the agent."""
    detail = entry.get("detail")
    detail = detail if isinstance(detail, dict) else {}
    kept: dict[str, object] = {}
    code = detail.get("code")
    if isinstance(code, str):
        kept["code"] = code if code in codes(module) else CommonCode.UNDECLARED.value
    for key, words in AUDIT_WORDS.items():
        if detail.get(key) in words:
            kept[key] = detail[key]
    for key in AUDIT_COUNTS:
        value = detail.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            kept[key] = value
    return {
        "id": entry.get("id"),
        "at": entry.get("at"),
        "action": entry.get("action"),
        "outcome": entry.get("outcome"),
        "target": None,
        "detail": kept,
    }


def audit_fits(entry: dict[str, object], module: str = "vm") -> bool:
    """Whether an audit entry carries nothing `config` mode does not allow: exactly what
    `audit_codes_only` keeps (a sent entry must equal its own reduction)."""
    return (
        entry.get("action") in set(VmAuditAction)
        and entry.get("outcome") in set(AuditOutcome)
        and isinstance(entry.get("id"), int)
        and isinstance(entry.get("at"), str)
        and len(str(entry.get("at"))) <= 40
        and audit_codes_only(entry, module) == entry
    )


def batch_fits_config(batch: MetadataBatch) -> bool:
    """The one metadata batch `config` mode lets up: an audit trail of codes only. The
    agent checks before sending and the cloud again before storing."""
    return (batch.module, batch.kind) == ("vm", "vm.audit") and all(
        audit_fits(r, batch.module) for r in batch.records
    )


MODULES: dict[str, tuple[type[enum.StrEnum], type[enum.StrEnum] | None]] = {
    "noop": (NoopCode, NoopCount),
    "vm": (VmCode, VmCount),
}
"""Per module, its result codes and its count keys (None: it sends no counts)."""


def codes(module: str | None = None) -> frozenset[str]:
    """The result codes allowed in `config` mode: the common ones and the module's, or every
    module's when the module is not known (an ack names none)."""
    declared = [MODULES[module]] if module in MODULES else list(MODULES.values())
    return frozenset(CommonCode) | {str(c) for code_enum, _ in declared for c in code_enum}


def count_keys(module: str | None = None) -> frozenset[str]:
    declared = [MODULES[module]] if module in MODULES else list(MODULES.values())
    return frozenset(str(k) for _, keys in declared if keys is not None for k in keys)


def fits(
    sent_codes: Iterable[str | None], sent_keys: Iterable[str] = (), module: str | None = None
) -> bool:
    """Whether every code and count key is declared (for `module`, or for any module)."""
    return {c for c in sent_codes if c is not None} <= codes(module) and set(
        sent_keys
    ) <= count_keys(module)


def openapi_schemas() -> dict[str, object]:
    """The vocabulary as the OpenAPI document shows it: the unions and, per module, its own."""
    per_module = {
        name: {
            "codes": sorted(str(c) for c in code_enum),
            "count_keys": sorted(str(k) for k in keys) if keys is not None else [],
        }
        for name, (code_enum, keys) in sorted(MODULES.items())
    }
    return {
        "ConfigResultCode": {
            "type": "string",
            "enum": sorted(codes()),
            "description": "In flow mode config, an ack's or a job event's code is one of "
            "these (the common codes and each module's); anything else is refused with 403.",
            "x-dockyard-common": sorted(str(c) for c in CommonCode),
            "x-dockyard-modules": {n: v["codes"] for n, v in per_module.items()},
        },
        "ConfigCountKey": {
            "type": "string",
            "enum": sorted(count_keys()),
            "description": "In flow mode config, a job event's counts are keyed by these only.",
            "x-dockyard-modules": {n: v["count_keys"] for n, v in per_module.items()},
        },
    }
