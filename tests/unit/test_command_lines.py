"""The command line's shared rules (agent/commandline.py) on the real parser tree: an example
per command that parses, `--json` anywhere, tables with headers, completion a real bash
runs, and one environment reference that the code and the docs agree with."""

from __future__ import annotations

import argparse
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dockyard.agent import cli, settings
from dockyard.agent.commandline import commands, table
from dockyard.cloud import cli as cloud_cli

ROOT = Path(__file__).resolve().parents[2]


def _leaves(ap: argparse.ArgumentParser | None = None) -> list[tuple[str, argparse.ArgumentParser]]:
    tree = ap or cli.parser()
    return [(" ".join(path), p) for path, p, leaf in commands(tree) if leaf and path]


@pytest.mark.parametrize("program", ["dockyard-agent", "dockyard"])
def test_every_command_has_an_example_that_the_parser_takes(program: str) -> None:
    ap = cli.parser() if program == "dockyard-agent" else cloud_cli.parser()
    missing = [path for path, p in _leaves(ap) if not p.epilog or "example:" not in p.epilog]
    assert missing == []
    for path, p in _leaves(ap):
        assert p.epilog is not None
        line = p.epilog.split("example:\n", 1)[1].strip()
        words = shlex.split(line)
        while "=" in words[0]:  # an environment variable set for the example
            words.pop(0)
        assert words[0] == program, line
        # What follows a pipe or a redirection is the shell's, not ours.
        cut = next((i for i, w in enumerate(words) if w in ("|", ">")), len(words))
        args = ap.parse_args(words[1:cut])
        rest = iter(words[1:cut])  # the example runs this command: its words, in order
        assert all(name in rest for name in path.split()), (path, line)
        assert program == "dockyard" or callable(args.run)


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "vm", "ls"],
        ["vm", "--json", "ls"],
        ["vm", "ls", "--json"],
        ["--json", "status"],
        ["status", "--json"],
        ["vault", "--repo", "/r", "ls", "--json"],
        ["--json", "vault", "--repo", "/r", "key", "list"],
        ["vm", "never-act", "list", "--json"],
    ],
)
def test_json_is_heard_wherever_it_stands(argv: list[str]) -> None:
    assert cli.parser().parse_args(argv).json is True


@pytest.mark.parametrize("argv", [["vm", "ls"], ["status"], ["vault", "--repo", "/r", "ls"]])
def test_without_json_the_text_form(argv: list[str]) -> None:
    assert cli.parser().parse_args(argv).json is False


def test_vault_only_parser_hears_json_too() -> None:
    argv = ["vault", "--repo", "/r", "ls", "--json"]
    assert cli.parser(vault_only=True).parse_args(argv).json is True


def test_help_shows_defaults_and_the_state_variable() -> None:
    top = cli.parser().format_help()
    assert "$DOCKYARD_AGENT_STATE" in top
    prune = dict(_leaves())["vault prune"].format_help()
    assert "(default: 24.0)" in prune  # --grace, in hours
    assert "(default: 0)" in prune
    dock = " ".join(dict(_leaves())["dock"].format_help().split())
    assert dock.count("default: config") == 1  # named in its own help; not added twice


def test_table_pads_columns_under_a_header() -> None:
    out = io.StringIO()
    table(["vm", "state", "note"], [["lab/vm-1", "off", "free text"], ["b/2", None, ""]], out)
    lines = out.getvalue().splitlines()
    assert lines == [
        "VM        STATE  NOTE",
        "lab/vm-1  off    free text",
        "b/2       -      -",
    ]
    empty = io.StringIO()
    table(["vm", "reason"], [], empty)
    assert empty.getvalue() == "VM  REASON\n"


def test_bash_completion_completes_commands_and_sub_commands(tmp_path: Path) -> None:
    script = tmp_path / "dockyard-agent.bash"
    script.write_text(_completion("bash"))

    def complete(*words: str) -> set[str]:
        line = " ".join(["dockyard-agent", *words])
        probe = (
            f"source {shlex.quote(str(script))}\n"
            f"COMP_LINE={shlex.quote(line)}; COMP_POINT=${{#COMP_LINE}}\n"
            f"COMP_WORDS=(dockyard-agent {' '.join(shlex.quote(w) for w in words)})\n"
            f"COMP_CWORD={len(words)}\n"
            "fn=$(complete -p dockyard-agent | sed -E 's/.* -F ([^ ]+) .*/\\1/')\n"
            '"$fn" dockyard-agent "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"\n'
            'printf "%s\\n" "${COMPREPLY[@]}"\n'
        )
        done = subprocess.run(
            ["bash", "--norc", "-c", probe], capture_output=True, text=True, check=True
        )
        return set(done.stdout.split())

    assert {"vault", "vm"} <= complete("v")
    assert {"ls", "restore", "explain", "archived"} <= complete("vm", "")
    assert "--token-file" in complete("dock", "--t")


def _completion(shell: str) -> str:
    from dockyard.agent.commandline import completion

    return completion(cli.parser(), shell)


@pytest.mark.parametrize("shell", ["zsh", "tcsh"])
def test_completion_for_other_shells_names_the_commands(shell: str) -> None:
    text = _completion(shell)
    assert "dockyard-agent" in text
    assert "archive-key" in text


def test_every_variable_the_agent_reads_is_in_the_one_reference() -> None:
    read: set[str] = set()
    for source in (ROOT / "agent").rglob("*.py"):
        read |= set(re.findall(r'"(DOCKYARD_[A-Z0-9_]+)"', source.read_text()))
    assert read - set(settings.VARIABLES) == set()
    assert set(settings.VARIABLES) - read == set()  # nothing listed that nothing reads


def test_the_environment_docs_are_the_reference() -> None:
    doc = (ROOT / "docs" / "agent-environment.md").read_text()
    assert settings.reference() in doc, (
        "run: python -m dockyard.agent.settings > docs/agent-environment.md"
    )
    assert settings.reference() in cli.parser().format_help()


def test_the_cloud_cli_ends_quietly_when_its_reader_has_left() -> None:
    read, write = os.pipe()
    os.close(read)  # the reader left before the first byte: every write is refused
    try:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "dockyard"), "completion", "bash"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        os.close(write)
    assert done.returncode == 141
    assert done.stderr == ""
