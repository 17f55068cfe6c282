"""The bus's memory of quiet answers: forgotten on every wake-up, never stored stale."""

from __future__ import annotations

import asyncio
import uuid

from dockyard.cloud.bus import Bus


def test_a_quiet_answer_is_forgotten_on_wake_and_never_stored_stale() -> None:
    async def scenario() -> None:
        bus = Bus()
        await bus.start()
        agent = uuid.uuid4()
        version = bus.version(agent)
        bus.remember(agent, version, "seq 5")
        assert bus.recall(agent, 60) == "seq 5"
        bus.wake({agent})
        assert bus.recall(agent, 60) is None, "a wake-up forgets it"

        version = bus.version(agent)  # a poll starts reading the database ...
        bus.wake({agent})  # ... and a command is committed meanwhile
        bus.remember(agent, version, "seq 6 (read before the commit)")
        assert bus.recall(agent, 60) is None, "what was read before the wake-up is not kept"

        bus.remember(agent, bus.version(agent), "seq 7")
        assert bus.recall(agent, 0) is None, "too old"
        bus.forget_all()
        assert bus.recall(agent, 60) is None
        await bus.stop()

    asyncio.run(scenario())


def test_only_the_first_hold_after_news_is_spread() -> None:
    """Agents given the same news poll again together; the first hold after it is the one
    drawn from the whole wait, the later ones from its last fifth (see the poll route)."""

    async def scenario() -> None:
        bus = Bus()
        await bus.start()
        agent, other = uuid.uuid4(), uuid.uuid4()
        assert not bus.first_hold(agent), "nothing remembered yet"
        bus.remember(agent, bus.version(agent), "seq 5")
        bus.remember(other, bus.version(other), "seq 1")
        assert bus.first_hold(agent)
        assert not bus.first_hold(agent), "the next holds are not spread again"
        assert bus.first_hold(other), "each agent has its own"

        bus.remember(agent, bus.version(agent), "seq 6")
        bus.wake({agent})
        assert not bus.first_hold(agent), "a wake-up forgets the answer and its mark"
        bus.remember(agent, bus.version(agent), "seq 7")
        bus.forget_all()
        assert not bus.first_hold(agent)
        await bus.stop()

    asyncio.run(scenario())


def test_a_held_poll_is_woken_or_lapses_and_leaves_no_timer() -> None:
    async def scenario() -> None:
        bus = Bus()
        await bus.start()
        agent = uuid.uuid4()
        loop = asyncio.get_running_loop()
        with bus.subscribe(agent) as waiter:
            assert not await waiter.wait(0.01), "nothing came: the hold lapsed"
        with bus.subscribe(agent) as waiter:
            loop.call_later(0.01, bus.wake, {agent})
            assert await waiter.wait(30), "woken long before the hold's end"
        with bus.subscribe(agent) as waiter:
            bus.release_all()
            assert await waiter.wait(30)
            assert waiter.released
        scheduled = getattr(loop, "_scheduled", [])
        assert not [h for h in scheduled if not h.cancelled()], "no timer outlives its poll"
        await bus.stop()

    asyncio.run(scenario())
