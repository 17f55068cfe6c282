"""The committed MSP client (cloud/client/) is exactly what the generator makes from the
committed SDL and operations: regenerated into a temporary folder and compared file by
file, so a schema change not followed by `make client`, an edited operation, or a hand edit
to generated code fails here with the diff.

The generator (ariadne-codegen, pinned in pyproject's `codegen` group) runs from its own
venv, which `make` fills from the package registry on first use (about 40 s, then cached
under build/). A second check needs no generator: every operation the client sends is
validated against the committed SDL with graphql-core, as the cloud would validate it.
"""

from __future__ import annotations

import ast
import difflib
import json
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import graphql

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "cloud" / "client"
SDL = ROOT / "cloud" / "api" / "graphql" / "schema.graphql"
GENERATOR = ROOT / "build" / "codegen-venv" / "bin" / "ariadne-codegen"
REGENERATE = "run `make client` and commit cloud/client/"


def _toml(section: dict[str, Any], prefix: str) -> str:
    """The generator's settings as TOML: strings, booleans and nested tables are all
    [tool.ariadne-codegen] holds (a JSON string is a valid TOML basic string)."""
    lines = [f"[{prefix}]"]
    tables = []
    for key, value in section.items():
        if isinstance(value, dict):
            tables.append(_toml(value, f"{prefix}.{key}"))
        elif isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join([*lines, "", *tables])


def _run(command: list[str], failure: str) -> None:
    """`command` from the root (so the paths the generator writes into each file's header
    are the committed ones); `failure` and the command's last output when it fails."""
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{failure}:\n{(done.stderr or done.stdout)[-3000:]}"


def _regenerate(into: Path) -> Path:
    _run(
        ["make", "-s", str(GENERATOR.relative_to(ROOT))],
        "the generator's venv could not be made (it installs pyproject's `codegen` group"
        " from the package registry)",
    )
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ariadne-codegen"]
    config = into / "codegen.toml"
    config.write_text(_toml({**settings, "target_package_path": str(into)}, "tool.ariadne-codegen"))
    _run(
        [str(GENERATOR), "client", "--config", str(config)],
        "the generator refused the committed SDL and operations (a field the operations"
        " select may be gone: edit cloud/client/operations.graphql, then make client)",
    )
    return into / str(settings["target_package_name"])


def _modules(folder: Path) -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(folder.glob("*.py"))}


def test_the_committed_client_is_what_the_generator_makes(tmp_path: Path) -> None:
    fresh = _modules(_regenerate(tmp_path))
    committed = _modules(CLIENT)
    assert fresh, "the generator wrote no modules"
    assert sorted(committed) == sorted(fresh), (
        f"the client's modules differ: committed {sorted(committed)}, generated {sorted(fresh)}"
        f"; {REGENERATE}"
    )
    drifted = {
        name: "".join(
            difflib.unified_diff(
                committed[name].splitlines(keepends=True),
                text.splitlines(keepends=True),
                f"committed/{name}",
                f"generated/{name}",
                n=1,
            )
        )
        for name, text in fresh.items()
        if committed[name] != text
    }
    assert not drifted, f"{REGENERATE}:\n" + "\n".join(drifted.values())[:4000]


def _sent_operations() -> dict[str, str]:
    """Each method's query text from the generated client, by method name."""
    tree = ast.parse((CLIENT / "client.py").read_text())
    found = {}
    for method in ast.walk(tree):
        if not isinstance(method, ast.FunctionDef):
            continue
        for call in ast.walk(method):
            if (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Name)
                and call.func.id == "gql"
                and isinstance(call.args[0], ast.Constant)
            ):
                found[method.name] = str(call.args[0].value)
    return found


def test_every_operation_the_client_sends_is_valid_against_the_committed_sdl() -> None:
    schema = graphql.build_schema(SDL.read_text())
    operations = _sent_operations()
    assert set(operations) >= {"tenants", "agents", "issue_command", "issue_commands", "command"}
    invalid = {
        name: [e.message for e in graphql.validate(schema, graphql.parse(text))]
        for name, text in operations.items()
    }
    assert not {k: v for k, v in invalid.items() if v}, f"{invalid}; {REGENERATE}"


def test_a_changed_sdl_is_caught_by_the_validation() -> None:
    """The check above can fail: with a field the client reads taken out of the SDL, the
    operations that select it no longer validate."""
    sdl = SDL.read_text().replace("  resultCode: String\n", "", 1)
    assert sdl != SDL.read_text()
    schema = graphql.build_schema(sdl)
    broken = {
        name
        for name, text in _sent_operations().items()
        if graphql.validate(schema, graphql.parse(text))
    }
    assert broken >= {"issue_command", "issue_commands", "command"}
