"""The systemd unit restarts the agent only where a restart can help."""

from __future__ import annotations

from pathlib import Path

from dockyard.agent import errors

UNIT = Path(__file__).resolve().parents[2] / "infra" / "dockyard-agent.service"


def test_permanent_exits_are_not_restarted_and_unreachable_is() -> None:
    lines = [line.strip() for line in UNIT.read_text().splitlines()]
    prevent = next(line for line in lines if line.startswith("RestartPreventExitStatus="))
    codes = {int(c) for c in prevent.split("=", 1)[1].split()}
    assert codes == {errors.EXIT_BAD_INPUT, errors.EXIT_REVOKED, errors.EXIT_STATE}
    assert errors.EXIT_UNREACHABLE not in codes
    assert "Restart=on-failure" in lines
