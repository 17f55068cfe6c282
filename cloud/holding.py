"""How a poll is held: when to answer at once, how long to hold, and the quiet answer a
process remembers so most polls never touch the database.

This is delivery's policy, apart from the HTTP handler that parses the request and writes
the answer (`api/agent/routes.py`) and from the rules of what is delivered (the domain's
`delivery.poll_views` and `states.py`). It works on the process's bus (`bus.py`): the
subscription that a NOTIFY wakes, the version that any wake-up moves, the remembered answer.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from dockyard.agent import protocol as p

from .bus import Bus

QUIET_MAX_AGE_S = 600.0
"""A remembered quiet answer is trusted this long (every change wakes the agent and drops
it anyway)."""
SPREAD = (0.2, 1.0)
"""The share of `wait` the first hold after news lasts, drawn at random."""
STEADY = (0.8, 1.0)
"""The share of `wait` every other hold lasts."""


@dataclass(frozen=True)
class Quiet:
    """A remembered quiet answer and its JSON, made once: most polls are agents coming
    back after a hold with nothing new, and serialising the same answer for each was a
    tenth of the cost of holding them."""

    last_seq: int
    tag: str
    body: bytes

    @classmethod
    def of(cls, answer: p.PollResponse) -> Quiet:
        return cls(answer.last_seq, answer.tag, answer.model_dump_json().encode())

    def fits(self, after: int, tag: str) -> bool:
        return self.last_seq == after and self.tag == tag


Fetch = Callable[[], Awaitable[tuple[p.PollResponse, bool]]]
"""Reads the agent's answer from the database: the answer and whether it is complete
(not cut short at a page: nothing newer exists)."""


def hold_share(spread: bool) -> float:
    """Held for 80-100% of `wait`, so agents that polled together drift apart. The first
    hold after news (a poll this process had to read for, or the one after an answer that
    carried news or a first tag) is 20-100%: agents that all came back at once (a restart,
    a push to every agent, the first poll after docking) return spread over the whole wait,
    not in waves every 20-25 s that load the cloud in turns."""
    return random.uniform(*(SPREAD if spread else STEADY))


async def answer(
    bus: Bus, agent_id: uuid.UUID, after: int, tag: str, wait: float, fetch: Fetch
) -> p.PollResponse | Quiet | None:
    """The poll's answer: at once when there is news (or the agent's settings tag is
    stale, or it asked not to wait), else after a hold that news cuts short. None: this
    process is letting its polls go (a restart), the agent should come back."""

    async def read() -> p.PollResponse:
        version = bus.version(agent_id)
        found, complete = await fetch()
        if complete:  # remember what the agent will know once it has this answer
            bus.remember(agent_id, version, Quiet.of(found.model_copy(update={"entries": []})))
        return found

    with bus.subscribe(agent_id) as waiter:
        # Subscribed first, so a wake-up between here and the wait is never missed.
        quiet = bus.recall(agent_id, QUIET_MAX_AGE_S)
        held: p.PollResponse | Quiet
        if quiet is not None and quiet.fits(after, tag) and wait > 0:
            held = quiet
            spread = bus.first_hold(agent_id)
        else:
            held = await read()
            if held.entries or held.last_seq > after or wait <= 0 or held.tag != tag:
                return held
            bus.first_hold(agent_id)  # this hold is the spread one
            spread = True
        bus.waiting += 1
        try:
            woken = await waiter.wait(wait * hold_share(spread))
        finally:
            bus.waiting -= 1
        if not woken:
            return held
        if waiter.released:
            return None
        return await read()
