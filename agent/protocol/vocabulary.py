"""The closed vocabulary of `config` flow mode: every result code and count key a module may
send up, declared once per module, here, where both the agent and the cloud read it.

In `config` mode the cloud refuses (403, audited) any ack code, job event code or count key
outside these enumerations: a pattern alone would admit `salaries-2024.xlsx` or
`alice.smith`, and a closed list admits no name at all. The agent maps a code it did not
declare to `undeclared` before sending it in `config` mode, so it never gets refused for
its own drivers' wording. From `metadata` up any `Code` passes, as before.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable


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

    AMBIGUOUS = "ambiguous"
    ARCHIVE_MISMATCH = "archive_mismatch"
    AWS_ERROR = "aws_error"
    BAD_CONFIG = "bad_config"
    BAD_PATH = "bad_path"
    BAD_PLACEMENT = "bad_placement"
    BAD_POLICY = "bad_policy"
    BMC_ERROR = "bmc_error"
    CREATE_FAILED = "create_failed"
    DATASTORE_ERROR = "datastore_error"
    DATASTORE_FULL = "datastore_full"
    DRIVER_MISSING = "driver_missing"
    ENDPOINT_UNREACHABLE = "endpoint_unreachable"
    FILE_NOT_FOUND = "file_not_found"
    HOST_IN_MAINTENANCE = "host_in_maintenance"
    INVALID_POWER_STATE = "invalid_power_state"
    INVALID_STATE = "invalid_state"
    LIBVIRT_ERROR = "libvirt_error"
    NAME_TAKEN = "name_taken"
    NO_POWER_INTERFACE = "no_power_interface"
    NOT_DUE = "not_due"
    NOT_SUPPORTED = "not_supported"
    REFUSED_BY_SAFETY_NET = "refused_by_safety_net"
    SHORT_SOURCE = "short_source"
    STUB_FOREIGN = "stub_foreign"
    STUB_INVALID = "stub_invalid"
    STUB_ORPHANED = "stub_orphaned"
    STUB_TAMPERED = "stub_tampered"
    TASK_FAILED = "task_failed"
    TIMEOUT = "timeout"
    UNKNOWN_ENDPOINT = "unknown_endpoint"
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
