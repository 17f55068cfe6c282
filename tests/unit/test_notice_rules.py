"""The notice rules both sides share (agent/protocol/notices.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dockyard.agent.protocol import notices as rules
from dockyard.agent.protocol.links import BadLink

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("state", list(rules.DecisionState))
def test_only_an_open_notice_takes_an_answer(state: rules.DecisionState) -> None:
    if state in rules.OPEN:
        rules.check_answerable(state)
        return
    with pytest.raises(BadLink) as refused:
        rules.check_answerable(state)
    expected = {
        rules.DecisionState.SKIPPED: "already answered with skip",
        rules.DecisionState.COMMANDED: "too late",
        rules.DecisionState.HELD: "too late",
        rules.DecisionState.DONE: "too late",
    }.get(state, "not open")
    assert expected in str(refused.value)


def test_a_delay_counts_from_the_later_of_due_and_now_and_links_outlive_it() -> None:
    assert rules.delayed_until(NOW - timedelta(days=1), NOW) == NOW + rules.DELAY
    assert (
        rules.delayed_until(NOW + timedelta(days=2), NOW) == NOW + timedelta(days=2) + rules.DELAY
    )
    assert rules.delayed_until(None, NOW) == NOW + rules.DELAY
    assert rules.link_lifetime(0) == timedelta(hours=1) + rules.DELAY
    assert rules.link_lifetime(72) == timedelta(hours=72) + rules.DELAY


def test_the_notice_names_the_vm_the_action_the_time_and_both_links() -> None:
    subject, body = rules.notice_text(
        "web1", "lab/vm-1", "power_off", NOW, ["cpu p95 1% < 5%"], "https://s", "https://d"
    )
    assert subject == "VM web1 will be shut down on 2026-12-03 12:00 UTC"
    for part in (
        "web1 (lab/vm-1)",
        "will power off web1 on 2026-12-03 at 12:00",
        "cpu p95 1%",
        "https://s",
        "https://d",
    ):
        assert part in body
