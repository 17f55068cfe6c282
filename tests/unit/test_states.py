"""Command and job states: one table of moves, final states final."""

from __future__ import annotations

import pytest

from dockyard.cloud.domain import states
from dockyard.cloud.domain.states import BadMove, CommandState, JobState


def _reachable(table: dict, start: object) -> set[object]:  # type: ignore[type-arg]
    seen, todo = {start}, [start]
    while todo:
        for nxt in table.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_every_move_leads_somewhere_and_final_states_have_no_way_out() -> None:
    commands = _reachable(states.COMMAND_MOVES, CommandState.QUEUED)
    assert commands == set(CommandState) - {CommandState.CANCELLED}
    jobs = _reachable(states.JOB_MOVES, JobState.PENDING)
    assert jobs == {JobState.PENDING, JobState.RUNNING, *states.JOB_FINAL} - {
        JobState.REJECTED,
        JobState.EXPIRED,
        JobState.CANCELLED,
    }
    for final in states.COMMAND_FINAL:
        assert final not in states.COMMAND_MOVES
        with pytest.raises(BadMove):
            states.move(final, CommandState.RUNNING)
    assert set(states.COMMAND_MOVES) >= states.COMMAND_OPEN


def test_a_move_the_table_lacks_is_refused() -> None:
    assert states.move("sent", CommandState.ACKED) is CommandState.ACKED
    assert states.move("running", CommandState.RUNNING) is CommandState.RUNNING
    with pytest.raises(BadMove, match="from queued to succeeded"):
        states.move("queued", CommandState.SUCCEEDED)
    with pytest.raises(BadMove):
        states.move("succeeded", JobState.RUNNING)
    with pytest.raises(BadMove):
        states.moves((CommandState.ACKED, CommandState.QUEUED))
