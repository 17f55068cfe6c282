"""Wake-ups for held polls: an in-memory event per waiting agent, fed across replicas by
PostgreSQL LISTEN/NOTIFY (one listening connection per process) or, on SQLite, in-process.

A held poll holds no database connection: it waits on its `asyncio.Event`. Only a change
to an agent's sequence (or its revocation, or a changed flow mode or plan) sends a NOTIFY;
polls and acks never do, since NOTIFY takes a global lock at commit.

Because every change an agent could see comes with a wake-up, the bus also remembers the
last quiet answer per agent (nothing new after sequence N, this mode, these features): a
poll that already has it is held without touching the database. Each wake-up bumps the
agent's version and forgets the answer; an answer read from the database is remembered
only if no wake-up came while it was being read; a lost listening connection forgets all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from dockyard.cloud.store.db import NOTIFY_CHANNEL

log = logging.getLogger(__name__)


class Waiter:
    """One held poll's wake-up: a future and, while it waits, one timer. (asyncio.wait_for
    on an Event made a task and a timer for every held poll, a tenth of the cloud's CPU
    with thousands of agents polling.)"""

    __slots__ = ("released", "woken")

    def __init__(self) -> None:
        self.woken: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.released = False

    def wake(self) -> None:
        if not self.woken.done():
            self.woken.set_result(True)

    def _lapse(self) -> None:
        if not self.woken.done():
            self.woken.set_result(False)

    async def wait(self, seconds: float) -> bool:
        """Whether a wake-up came within `seconds`."""
        timer = asyncio.get_running_loop().call_later(seconds, self._lapse)
        try:
            return await self.woken
        finally:
            timer.cancel()


class Bus:
    """Waiters per agent in this process; `wake` may be called from any thread."""

    def __init__(self) -> None:
        self._waiters: dict[uuid.UUID, set[Waiter]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closing = False
        self._versions: dict[uuid.UUID, int] = {}
        self._quiet: dict[uuid.UUID, tuple[int, float, Any]] = {}
        self._fresh: set[uuid.UUID] = set()
        self.seen: dict[uuid.UUID, datetime] = {}
        self.skews: dict[uuid.UUID, int] = {}
        """The clock skew each agent reported with its last poll, seconds ahead of ours."""
        self.waiting = 0
        """Polls waiting for news right now (subscribed ones may still be reading)."""

    @property
    def listening(self) -> bool:
        """Whether wake-ups from other replicas reach this one (in-process: always)."""
        return True

    def take_seen(self) -> dict[uuid.UUID, datetime]:
        """The agents that polled since the last call, and when (for the sweeper to store)."""
        seen, self.seen = self.seen, {}
        return seen

    def take_skews(self) -> dict[uuid.UUID, int]:
        skews, self.skews = self.skews, {}
        return skews

    # --- the last quiet answer per agent (call these on the event loop) ----------------

    def version(self, agent_id: uuid.UUID) -> int:
        return self._versions.get(agent_id, 0)

    def remember(self, agent_id: uuid.UUID, version: int, answer: Any) -> None:
        """Keep `answer` if no wake-up for the agent came since `version` was read. The
        answer is fresh until `first_hold` is asked about it."""
        if self._versions.get(agent_id, 0) == version:
            self._quiet[agent_id] = (version, time.monotonic(), answer)
            self._fresh.add(agent_id)

    def first_hold(self, agent_id: uuid.UUID) -> bool:
        """Whether this is the first poll held on the agent's remembered answer: the
        agent polled again at once after news (or after connecting), as every agent that
        got the same news did, so this hold is the one to spread them apart."""
        if agent_id in self._fresh:
            self._fresh.discard(agent_id)
            return True
        return False

    def recall(self, agent_id: uuid.UUID, max_age_s: float) -> Any:
        entry = self._quiet.get(agent_id)
        if entry is None or entry[0] != self._versions.get(agent_id, 0):
            return None
        if time.monotonic() - entry[1] > max_age_s:
            return None
        return entry[2]

    def forget_all(self) -> None:
        for agent_id in self._quiet:
            self._versions[agent_id] = self._versions.get(agent_id, 0) + 1
        self._quiet.clear()
        self._fresh.clear()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        self.release_all()

    @contextlib.contextmanager
    def subscribe(self, agent_id: uuid.UUID) -> Any:
        waiter = Waiter()
        self._waiters.setdefault(agent_id, set()).add(waiter)
        try:
            yield waiter
        finally:
            waiters = self._waiters.get(agent_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[agent_id]

    def wake(self, agent_ids: set[uuid.UUID]) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake_now(agent_ids)
        else:
            loop.call_soon_threadsafe(self._wake_now, agent_ids)

    def _wake_now(self, agent_ids: set[uuid.UUID]) -> None:
        for agent_id in agent_ids:
            self._versions[agent_id] = self._versions.get(agent_id, 0) + 1
            self._quiet.pop(agent_id, None)
            self._fresh.discard(agent_id)
            for waiter in self._waiters.get(agent_id, ()):
                waiter.wake()

    def release_all(self) -> None:
        """Answer every held poll at once: the process is going away."""
        self.closing = True

        def _release() -> None:
            for waiters in self._waiters.values():
                for waiter in waiters:
                    waiter.released = True
                    waiter.wake()

        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(_release)


class PostgresBus(Bus):
    """Listens on one connection for NOTIFYs from every replica's commits."""

    def __init__(self, conninfo: str) -> None:
        super().__init__()
        self._conninfo = conninfo
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        await super().start()
        self._task = asyncio.create_task(self._listen_forever(), name="dockyard-bus")
        await asyncio.wait_for(self._ready.wait(), timeout=30)

    @property
    def listening(self) -> bool:
        return self._ready.is_set()

    async def stop(self) -> None:
        await super().stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen_forever(self) -> None:
        import psycopg

        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._ready.set()
                    delay = 0.5
                    async for note in conn.notifies():
                        try:
                            self._wake_now({uuid.UUID(x) for x in note.payload.split(",")})
                        except ValueError:
                            log.warning("bus: ignoring a malformed notification")
            except asyncio.CancelledError:
                raise
            except Exception as e:
                # Notifications sent while we were away are lost: wake every held poll so
                # each re-reads its sequence, then listen again.
                log.warning("bus: listening connection lost (%s); reconnecting", e)
                self._ready.clear()  # not ready until it listens again (/readyz)
                self.forget_all()
                self._wake_now(set(self._waiters))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)


def libpq_conninfo(sqlalchemy_url: str) -> str:
    """psycopg wants the URL without SQLAlchemy's `+psycopg` driver suffix."""
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


@contextlib.asynccontextmanager
async def running(bus: Bus) -> AsyncIterator[Bus]:
    await bus.start()
    try:
        yield bus
    finally:
        await bus.stop()
