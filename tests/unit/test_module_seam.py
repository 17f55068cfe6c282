"""A module is its own folder and one registry line: a throwaway module, defined here and
registered for the test alone, gets its policy kind, its command and its CLI without the
runner or the agent's CLI naming it."""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path
from typing import Any, ClassVar

import pytest

from dockyard.agent import cli, modules, runner
from dockyard.agent.modules.base import Handler, Module, Outcome
from dockyard.agent.modules.noop import NoopModule
from dockyard.agent.protocol import CommandEntry, PolicyEntry
from dockyard.agent.state import State


class Scratch(Module):
    name: ClassVar[str] = "scratch"
    policy_kinds: ClassVar[frozenset[str]] = frozenset({"scratch-rules"})
    seen: ClassVar[list[tuple[str, int]]] = []

    def on_policy(
        self, kind: str, name: str, version: int, document: dict[str, Any] | None
    ) -> None:
        Scratch.seen.append((kind, version))

    def handlers(self) -> dict[str, Handler]:
        return {"scratch.ping": lambda command: Outcome(detail="pong")}

    @classmethod
    def add_cli(cls, sub: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser("scratch", help="the throwaway module")
        parser.add_argument("word")
        return parser

    @classmethod
    def run_cli(
        cls, args: argparse.Namespace, state_dir: Path, policies: list[dict[str, Any]]
    ) -> int:
        print(f"scratch says {args.word} with {len(policies)} policies")
        return 0


@pytest.fixture
def with_scratch(monkeypatch: pytest.MonkeyPatch) -> None:
    Scratch.seen.clear()
    both = {NoopModule.name: NoopModule, Scratch.name: Scratch}
    monkeypatch.setattr(modules, "registry", lambda: both)
    monkeypatch.setattr(runner, "registry", lambda: both)


def test_its_cli_is_the_agents(
    with_scratch: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # In this process the agent's log set-up would outlive the test: its handler writes to
    # pytest's captured stream, closed after the test, which other threads log to later.
    monkeypatch.setattr(cli.logs, "configure", lambda *args, **kwargs: None)
    assert cli.main(["--state", str(tmp_path / "agent"), "scratch", "hello"]) == 0
    assert "scratch says hello with 0 policies" in capsys.readouterr().out
    assert not (tmp_path / "agent").exists(), "a module's command created no state"


def test_its_policies_and_commands_reach_it_alone(with_scratch: None, tmp_path: Path) -> None:
    loop = runner.Runner(State(tmp_path / "agent"), wait_s=0)
    try:
        for kind in ("scratch-rules", "noop", "scratch"):
            loop._apply_policy(
                PolicyEntry(
                    seq=1,
                    policy_id=uuid.uuid4(),
                    policy_kind=kind,
                    name="p",
                    version=3,
                    document={},
                )
            )
        assert Scratch.seen == [("scratch-rules", 3)], "its kind only, not a prefix's"
        module, handler = loop._handlers["scratch.ping"]
        assert module is loop.modules["scratch"]
        entry = CommandEntry.model_construct(name="scratch.ping")
        assert handler(entry).detail == "pong"
    finally:
        loop.state.close()
