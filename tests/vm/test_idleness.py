"""The idleness rule on its own: idle, active, unknown, and every reason it gives.

Guest-level signals (sessions, GPU, application processes) are reported by no peer that
runs here, so their histories are written by hand: a declared fake of what a guest agent
would report, fed to the same rule.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from dockyard.agent.modules.vm.idleness import History, evaluate
from dockyard.agent.protocol.vm import IdleState, Signal, VmLifecyclePolicy

TODAY = 20_000
ALL = frozenset(Signal)
POLICY = VmLifecyclePolicy(idle_days=90, sample_interval_s=3600, min_coverage=0.75)
QUIET = {Signal.CPU: (1.0, 24), Signal.DISK: (10.0, 24), Signal.NET: (0.5, 24)}


def quiet_days(first: int = TODAY - 90, last: int = TODAY - 1) -> History:
    return {day: dict(QUIET) for day in range(first, last + 1)}


def test_quiet_for_the_whole_period_is_idle() -> None:
    result = evaluate(POLICY, ALL, quiet_days(), TODAY)
    assert result.state == IdleState.IDLE
    assert (result.first_day, result.last_day) == (TODAY - 90, TODAY - 1)
    assert (
        "stayed under the thresholds (cpu peak < 5%, disk peak < 100 KB/s, net peak < 1 KB/s)"
        in result.reasons[0]
    )
    assert result.missing_days == 0


def test_one_busy_day_anywhere_in_the_window_keeps_it_active() -> None:
    history = quiet_days()
    history[TODAY - 60][Signal.NET] = (400.0, 24)
    result = evaluate(POLICY, ALL, history, TODAY)
    assert result.state == IdleState.ACTIVE
    assert result.last_active_day == TODAY - 60
    assert "net peak reached 400 KB/s" in result.reasons[0]


def test_a_threshold_is_strict_and_a_busy_day_outside_the_window_does_not_count() -> None:
    history = quiet_days()
    history[TODAY - 91] = {Signal.CPU: (99.0, 24)}
    history[TODAY - 10][Signal.CPU] = (POLICY.thresholds.cpu, 24)
    assert evaluate(POLICY, ALL, history, TODAY).state == IdleState.ACTIVE
    history[TODAY - 10][Signal.CPU] = (POLICY.thresholds.cpu - 0.01, 24)
    assert evaluate(POLICY, ALL, history, TODAY).state == IdleState.IDLE


def test_missing_days_are_unknown_never_idle() -> None:
    history = quiet_days()
    for day in range(TODAY - 30, TODAY - 20):
        del history[day]
    result = evaluate(POLICY, ALL, history, TODAY)
    assert result.state == IdleState.UNKNOWN
    assert result.missing_days == 10
    assert "10 of 90 days lack enough samples" in result.reasons[0]


def test_too_few_samples_in_a_day_is_a_missing_day() -> None:
    history = quiet_days()
    history[TODAY - 5][Signal.DISK] = (1.0, 17)  # 18 of 24 needed at 75% coverage
    assert evaluate(POLICY, ALL, history, TODAY).state == IdleState.UNKNOWN
    history[TODAY - 5][Signal.DISK] = (1.0, 18)
    assert evaluate(POLICY, ALL, history, TODAY).state == IdleState.IDLE


def test_a_stopped_collector_leaves_everything_unknown() -> None:
    result = evaluate(POLICY, ALL, {}, TODAY)
    assert result.state == IdleState.UNKNOWN
    assert result.missing_days == 90


def test_activity_wins_over_missing_days() -> None:
    history = {TODAY - 3: {**QUIET, Signal.CPU: (80.0, 24)}}
    assert evaluate(POLICY, ALL, history, TODAY).state == IdleState.ACTIVE


def test_an_open_session_or_a_busy_gpu_keeps_a_quiet_vm_active() -> None:
    history = quiet_days()
    history[TODAY - 2][Signal.SESSIONS] = (1.0, 3)
    result = evaluate(POLICY, ALL, history, TODAY)
    assert result.state == IdleState.ACTIVE
    assert "interactive session" in result.reasons[0]
    history = quiet_days()
    history[TODAY - 40][Signal.GPU] = (60.0, 24)
    assert evaluate(POLICY, ALL, history, TODAY).state == IdleState.ACTIVE
    history[TODAY - 40][Signal.GPU] = (0.5, 24)
    assert evaluate(POLICY, ALL, history, TODAY).state == IdleState.IDLE


def test_application_processes_are_a_threshold_signal_when_chosen() -> None:
    policy = POLICY.model_copy(update={"signals": [Signal.CPU, Signal.APPS]})
    history = quiet_days()
    for day in history.values():
        day[Signal.APPS] = (0.0, 24)
    assert evaluate(policy, ALL, history, TODAY).state == IdleState.IDLE
    history[TODAY - 1][Signal.APPS] = (3.0, 24)
    assert evaluate(policy, ALL, history, TODAY).state == IdleState.ACTIVE


def test_a_signal_the_hypervisor_cannot_read_makes_it_unknown() -> None:
    policy = POLICY.model_copy(update={"signals": [Signal.CPU, Signal.APPS]})
    result = evaluate(policy, frozenset({Signal.CPU, Signal.DISK, Signal.NET}), quiet_days(), TODAY)
    assert result.state == IdleState.UNKNOWN
    assert "cannot report apps" in result.reasons[0]


def test_a_skip_starts_the_period_again() -> None:
    result = evaluate(POLICY, ALL, quiet_days(), TODAY, quiet_from_day=TODAY - 10)
    assert result.state == IdleState.UNKNOWN
    assert "quiet for 10 days" in result.reasons[0]
    assert (
        evaluate(POLICY, ALL, quiet_days(), TODAY + 80, quiet_from_day=TODAY - 10).state
        == IdleState.UNKNOWN
    )  # days after TODAY - 1 have no samples
    later = quiet_days(TODAY - 10, TODAY + 79)
    assert (
        evaluate(POLICY, ALL, later, TODAY + 80, quiet_from_day=TODAY - 10).state == IdleState.IDLE
    )


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"thresholds": {"cpu": 0}}, "cpu threshold 0 can never be undercut"),
        ({"thresholds": {"cpu": 150}}, "above 100%"),
        ({"thresholds": {"net": -5}}, "net threshold -5 can never be undercut"),
        ({"idle_days": 0}, "greater than or equal to 1"),
        ({"idle_days": 1, "notice_hours": 24}, "not shorter than the idle period"),
        ({"signals": []}, "at least 1 item"),
        ({"signals": ["cpu", "mood"]}, "Input should be"),
        ({"action": "power_on"}, "cannot be what happens to an idle VM"),
        ({"budget_share": 0}, "greater than 0"),
        ({"default_contact": "not-an-address"}, "should match pattern"),
        ({"colour": "blue"}, "Extra inputs are not permitted"),
    ],
)
def test_impossible_policies_are_refused_with_the_reason(
    document: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        VmLifecyclePolicy.model_validate(document)
