"""The systemd units in infra/ start what a pip install into /opt/dockyard puts there, with
arguments the command lines accept, in the state directory systemd makes for them; and
systemd itself (`systemd-analyze verify`) finds nothing to say about them."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from dockyard.agent import cli as agent_cli
from dockyard.cloud import cli as cloud_cli
from dockyard.cloud.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
VENV = Path("/opt/dockyard")  # where docs/operations.md and the images install
UNITS = {"dockyard-cloud.service": "dockyard", "dockyard-agent.service": "dockyard-agent"}
PARSERS: dict[str, Callable[[], object]] = {
    "dockyard": cloud_cli.parser,
    "dockyard-agent": agent_cli.parser,
}


def directives(unit: Path) -> dict[str, list[str]]:
    """`[Section]Key` -> every value it is given, as systemd reads a unit (comments and blank
    lines skipped; a key given twice keeps both)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"[{section}]{key.strip()}", []).append(value.strip())
    return out


def one(d: dict[str, list[str]], key: str) -> str:
    (value,) = d[key]
    return value


@pytest.mark.parametrize("name", sorted(UNITS))
def test_exec_start_is_the_installed_entry_point_with_arguments_it_accepts(name: str) -> None:
    d = directives(INFRA / name)
    argv = shlex.split(one(d, "[Service]ExecStart"))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    program = Path(argv[0])
    assert program.parent == VENV / "bin", f"{name}: {program} is not where pip puts it"
    assert program.name == UNITS[name]
    assert program.name in scripts
    args = PARSERS[program.name]().parse_args(argv[1:])  # type: ignore[attr-defined]
    assert args.command in ("serve", "run")
    # What the process writes lives where systemd makes the state directory.
    state = Path("/var/lib") / one(d, "[Service]StateDirectory")
    assert one(d, "[Service]StateDirectoryMode") == "0700"
    if program.name == "dockyard-agent":
        assert args.state == state
    else:
        assert Path(one(d, "[Service]WorkingDirectory")) == state
    assert one(d, "[Service]User") == "dockyard"


def test_the_cloud_reads_the_example_settings_and_keeps_its_data_in_its_state_directory() -> None:
    d = directives(INFRA / "dockyard-cloud.service")
    assert one(d, "[Service]EnvironmentFile") == "/etc/dockyard/cloud.env"
    example = dict(
        line.split("=", 1)
        for line in (INFRA / "cloud.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert Path(example["DOCKYARD_DATA_DIR"]) == Path("/var/lib") / one(
        d, "[Service]StateDirectory"
    )


def test_the_cloud_is_not_restarted_on_bad_settings_and_bad_settings_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    d = directives(INFRA / "dockyard-cloud.service")
    assert one(d, "[Service]Restart") == "on-failure"
    assert one(d, "[Service]RestartPreventExitStatus").split() == ["2"]
    monkeypatch.setenv("DOCKYARD_PORT", "70000")
    assert cloud_cli.main(["serve"]) == 2
    assert "DOCKYARD_* variables" in capsys.readouterr().err


def test_the_cloud_may_hold_more_polls_than_the_default_file_limit() -> None:
    d = directives(INFRA / "dockyard-cloud.service")
    assert int(one(d, "[Service]LimitNOFILE")) >= 20_000


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
@pytest.mark.parametrize("name", sorted(UNITS))
def test_systemd_finds_nothing_to_say(name: str, tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists, so the copy it reads starts the entry
    # point of this test's own install (the test above holds the original to /opt/dockyard).
    unit = INFRA / name
    installed = Path(sys.executable).parent / UNITS[name]
    assert installed.exists(), f"{installed}: the venv has no {UNITS[name]} entry point"
    text = unit.read_text().replace(str(VENV / "bin" / UNITS[name]), str(installed))
    assert text != unit.read_text()
    copy = tmp_path / name
    copy.write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    # Unknown keys and bad values are only warnings to systemd: any line about the unit fails.
    said = [line for line in done.stderr.splitlines() if name in line]
    assert done.returncode == 0, done.stderr
    assert said == []


def test_the_operations_guide_lists_every_setting() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    missing = [
        f"DOCKYARD_{name.upper()}"
        for name in Settings.model_fields
        if f"`DOCKYARD_{name.upper()}`" not in guide
    ]
    assert missing == []
