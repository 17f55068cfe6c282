"""The agent's modules send only what they declared: every literal code they raise or return
and every count key of their `Outcome`s is in their enumeration (read from the source, so a
new code without a declaration fails here rather than with a 403 in a customer's config
mode); the OpenAPI document lists the vocabulary."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dockyard.agent
from dockyard.agent.protocol import vocabulary
from dockyard.cloud.api.agent.spec import openapi

AGENT = Path(dockyard.agent.__file__).parent
_RAISERS = {"ArchiveFailed", "CommandFailed", "DriverError", "Outcome"}


def _sent(module_dir: Path) -> tuple[set[str], set[str]]:
    codes: set[str] = set()
    keys: set[str] = set()
    for source in module_dir.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                if name.endswith("Error") or name in _RAISERS:
                    first = node.args[0] if node.args else None
                    if (
                        isinstance(first, ast.Constant)
                        and isinstance(first.value, str)
                        and name != "Outcome"
                        and first.value.isidentifier()
                    ):
                        codes.add(first.value)
                if name == "__init__":  # an error class passing its code up, in any place
                    codes |= {
                        a.value
                        for a in node.args
                        if isinstance(a, ast.Constant)
                        and isinstance(a.value, str)
                        and a.value.isidentifier()
                    }
                for kw in node.keywords:
                    if kw.arg == "code" and isinstance(kw.value, ast.Constant):
                        codes.add(str(kw.value.value))
                    if name == "Outcome" and kw.arg == "counts" and isinstance(kw.value, ast.Dict):
                        keys |= {str(k.value) for k in kw.value.keys if isinstance(k, ast.Constant)}
            target = node.targets[0] if isinstance(node, ast.Assign) else None
            if isinstance(node, ast.AnnAssign):
                target = node.target
            value = getattr(node, "value", None)
            if (
                isinstance(target, ast.Name)
                and target.id == "code"
                and isinstance(value, ast.Constant)
                and isinstance(value.value, str)
            ):
                codes.add(value.value)
    return codes, keys


@pytest.mark.parametrize("module", sorted(vocabulary.MODULES))
def test_every_code_and_count_key_a_module_sends_is_declared(module: str) -> None:
    codes, keys = _sent(AGENT / "modules" / module)
    assert codes, "the scan found nothing: it no longer reads this module"
    assert codes - vocabulary.codes(module) == set()
    assert keys - vocabulary.count_keys(module) == set()


def test_names_are_not_in_the_vocabulary_and_openapi_lists_it() -> None:
    for name in ("salaries-2024.xlsx", "db01.corp.example.com", "alice.smith"):
        assert not vocabulary.fits([name])
        assert not vocabulary.fits([], [name])
    assert vocabulary.fits(["ok", "not_due"], ["vms"])
    assert not vocabulary.fits(["not_due"], module="noop")
    schemas = openapi("http://x")["components"]["schemas"]
    assert "host_in_maintenance" in schemas["ConfigResultCode"]["enum"]
    assert schemas["ConfigCountKey"]["x-dockyard-modules"]["noop"] == ["lines", "records"]


def test_an_audit_entry_in_config_mode_keeps_codes_closed_words_and_counts_only() -> None:
    entry = {
        "id": 3,
        "at": "2026-04-02T12:00:00+00:00",
        "action": "vm.power",
        "outcome": "refused",
        "target": "lab/payroll-db",
        "detail": {
            "code": "refused_by_safety_net",
            "reason": "payroll-db is on the never-act list",
            "source": "cloud",
            "by": "alice.smith@example.com",
            "budget": 2,
            "held": ["payroll-db"],
        },
    }
    reduced = vocabulary.audit_codes_only(entry)
    assert reduced["target"] is None
    assert reduced["detail"] == {"code": "refused_by_safety_net", "source": "cloud", "budget": 2}
    assert vocabulary.audit_fits(reduced)
    assert not vocabulary.audit_fits(entry)
    odd = reduced | {"detail": {"code": "payroll-db.qcow2"}}
    assert vocabulary.audit_codes_only(odd)["detail"] == {"code": "undeclared"}
    assert not vocabulary.audit_fits(odd)
    assert not vocabulary.audit_fits(reduced | {"outcome": "alice.smith"})
    assert not vocabulary.audit_fits(reduced | {"id": "lab/payroll-db"})
