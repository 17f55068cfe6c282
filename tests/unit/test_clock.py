"""The scaled clock with a position file never runs backwards across a restart, nor when
another process on the same file lags behind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dockyard.agent import clock


def test_a_restarted_scaled_clock_goes_on_from_the_position_the_last_run_left(
    tmp_path: Path,
) -> None:
    position = tmp_path / "agent-clock"
    first = clock.ScaledClock(1e6, position)
    before = [first() for _ in range(3)]
    assert before == sorted(before)
    left = datetime.fromisoformat(position.read_text())
    assert left > datetime.now(UTC) + timedelta(seconds=1)  # far ahead of the wall

    restarted = clock.ScaledClock(1e6, position)
    assert restarted() >= left
    assert restarted.origin == left


def test_a_lagging_clock_never_moves_the_position_back(tmp_path: Path) -> None:
    position = tmp_path / "agent-clock"
    ahead = datetime.now(UTC) + timedelta(days=30)
    position.write_text(ahead.isoformat())
    late = clock.ScaledClock(1.0)  # no file: the wall clock, a month behind the position
    late.position = position
    late._save(late())
    assert datetime.fromisoformat(position.read_text()) == ahead


def test_the_environment_names_the_position_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKYARD_CLOCK", f"scale:1440:{tmp_path / 'c'}")
    made = clock.from_env()
    assert isinstance(made, clock.ScaledClock)
    assert made.factor == 1440
    assert made.position == tmp_path / "c"
    monkeypatch.setenv("DOCKYARD_CLOCK", "scale:fast:/x")
    with pytest.raises(ValueError, match=r"scale:N:/path"):
        clock.from_env()
