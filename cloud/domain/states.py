"""Where commands and jobs are, and the one table of how each may move.

A command is the delivery (queued for its agent, sent in a poll answer, acked, then its
job's result); a job is the execution the agent reports. Their states were strings moved
by hand in four files and by CASE expressions in SQL; here each state is an enum member
and each allowed move a row of `COMMAND_MOVES` or `JOB_MOVES`. Code that moves a state in
Python asks `move` first; the SQL statements that move many rows at once name their moves
with `moves`, which refuses at import a move the table does not have. Final states have
no way out: a late event never reopens a finished job. (`cancelled`, and a job's
`rejected` and `expired`, are named for the API's sake; nothing moves there yet.)
"""

from __future__ import annotations

import enum


class CommandState(enum.StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    ACKED = "acked"
    REJECTED = "rejected"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


class JobState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


C, J = CommandState, JobState

COMMAND_MOVES: dict[CommandState, frozenset[CommandState]] = {
    # Delivered in a poll answer, or its time-to-live ran out first.
    C.QUEUED: frozenset({C.SENT, C.EXPIRED}),
    # Acked (or refused) by the agent; its result may come before the ack.
    C.SENT: frozenset({C.ACKED, C.REJECTED, C.RUNNING, C.SUCCEEDED, C.FAILED, C.TIMED_OUT}),
    C.ACKED: frozenset({C.RUNNING, C.SUCCEEDED, C.FAILED, C.TIMED_OUT}),
    C.RUNNING: frozenset({C.SUCCEEDED, C.FAILED, C.TIMED_OUT}),
}
JOB_MOVES: dict[JobState, frozenset[JobState]] = {
    J.PENDING: frozenset({J.RUNNING, J.SUCCEEDED, J.FAILED, J.TIMED_OUT}),
    J.RUNNING: frozenset({J.SUCCEEDED, J.FAILED, J.TIMED_OUT}),
}

COMMAND_FINAL = frozenset(C) - frozenset(COMMAND_MOVES)
COMMAND_OPEN = frozenset({C.SENT, C.ACKED, C.RUNNING})
"""Delivered and not finished: what a result may still arrive for."""
JOB_FINAL = frozenset(J) - frozenset(JOB_MOVES)


class BadMove(Exception):
    """Code asked for a move the table does not have: a bug, never the user's input."""


def may_move(current: str, to: CommandState | JobState) -> bool:
    table: dict = COMMAND_MOVES if isinstance(to, CommandState) else JOB_MOVES  # type: ignore[type-arg]
    kind = type(to)
    return current == to or to in table.get(kind(current), frozenset())


def move(current: str, to: CommandState | JobState) -> CommandState | JobState:
    """`to`, if the table lets `current` move there (staying put is always allowed)."""
    if not may_move(current, to):
        raise BadMove(f"a {type(to).__name__} does not move from {current} to {to}")
    return to


def moves(
    *pairs: tuple[CommandState, CommandState],
) -> tuple[tuple[CommandState, CommandState], ...]:
    """The moves a bulk SQL statement makes, checked against the table when it is defined."""
    for current, to in pairs:
        if to not in COMMAND_MOVES.get(current, frozenset()):
            raise BadMove(f"a command does not move from {current} to {to}")
    return pairs
