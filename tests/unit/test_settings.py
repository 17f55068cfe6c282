"""The agent's settings: one typed object, read from the environment when asked for."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.agent import cli, settings
from dockyard.agent.settings import AgentSettings


def test_defaults_and_each_variable() -> None:
    assert AgentSettings.from_env({}) == AgentSettings()
    given = AgentSettings.from_env(
        {
            "DOCKYARD_AGENT_STATE": "/srv/agent",
            "DOCKYARD_AGENT_MACHINE_ID": "m-1",
            "DOCKYARD_CLOCK": "scale:60",
            "DOCKYARD_AGENT_LOG_FORMAT": " JSON ",
        }
    )
    assert given == AgentSettings(Path("/srv/agent"), "m-1", "scale:60", "json")
    assert AgentSettings.from_env({"DOCKYARD_AGENT_LOG_FORMAT": "xml"}).log_format == "text"
    # What AgentSettings reads is in the one reference (which also lists the vault's own;
    # tests/unit/test_command_lines.py ties the whole reference to the code).
    assert {
        "DOCKYARD_AGENT_STATE",
        "DOCKYARD_AGENT_MACHINE_ID",
        "DOCKYARD_CLOCK",
        "DOCKYARD_AGENT_LOG_FORMAT",
    } <= set(settings.VARIABLES)


def test_a_variable_set_after_import_is_heard(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKYARD_AGENT_STATE", str(tmp_path / "late"))
    args = cli.parser().parse_args(["status"])
    assert args.state == tmp_path / "late"
