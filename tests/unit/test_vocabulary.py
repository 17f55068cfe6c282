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
_RAISERS = {"CommandFailed", "DriverError", "Outcome"}


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
