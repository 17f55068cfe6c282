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

It also carries the portal's live changes (`domain/live.py`: a kind, a tenant and an id,
never a row) to every replica's `LiveListener`s, for GraphQL subscriptions. Those are not
sent from the transaction that made them, which a NOTIFY would serialise with every other
commit: once it has committed, the change joins an outbox that one task per process sends
on a connection of its own, gathered into one NOTIFY at most every `LIVE_GATHER_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from dockyard.cloud.domain import live
from dockyard.cloud.domain.live import Change
from dockyard.cloud.store.db import NOTIFY_CHANNEL, Database, ScopedSession

log = logging.getLogger(__name__)

LIVE_CHANNEL = "dockyard_live"
# 100 changes of 65 characters and their commas stay under PostgreSQL's 8000-byte payload.
LIVE_BATCH = 100
LIVE_GATHER_S = 0.1
"""The outbox is sent at most this often: a burst of job reports costs a few NOTIFYs."""


class LiveListener:
    """One subscriber's changes not yet taken, from every replica. `lost` is set when some
    may have been missed (the listening connection dropped): re-read everything watched."""

    def __init__(self) -> None:
        self.pending: set[Change] = set()
        self.lost = False
        self.closed = False
        """The process is going away: end the subscription (its client reconnects)."""
        self._arrived = asyncio.Event()

    def add(self, changes: set[Change], *, lost: bool = False) -> None:
        self.pending |= changes
        self.lost = self.lost or lost
        self._arrived.set()

    async def next(self, seconds: float) -> tuple[set[Change], bool]:
        """The changes that arrived (waiting up to `seconds` for one), and whether some
        may have been lost; empty and False when the time ran out."""
        if not self.pending and not self.lost and not self.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), seconds)
        self._arrived.clear()
        changes, lost = self.pending, self.lost
        self.pending, self.lost = set(), False
        return changes, lost


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
        self._listeners: dict[uuid.UUID, set[LiveListener]] = {}
        """By the tenant whose changes they hear: a change wakes only its tenant's."""

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
        self._on_loop(self._wake_now, agent_ids)

    def _wake_now(self, agent_ids: set[uuid.UUID]) -> None:
        for agent_id in agent_ids:
            self._versions[agent_id] = self._versions.get(agent_id, 0) + 1
            self._quiet.pop(agent_id, None)
            self._fresh.discard(agent_id)
            for waiter in self._waiters.get(agent_id, ()):
                waiter.wake()

    # --- live changes for subscriptions -----------------------------------------------

    def attach(self, db: Database) -> None:
        """Announce the changes `db`'s sessions commit (`domain/live.py`) on this bus."""
        _buses[db.engine] = self

    @contextlib.contextmanager
    def live(self, tenant_ids: Iterable[uuid.UUID]) -> Any:
        """A `LiveListener` of these tenants' changes for as long as the block runs (on
        the event loop)."""
        listener = LiveListener()
        tenants = set(tenant_ids)
        for tenant_id in tenants:
            self._listeners.setdefault(tenant_id, set()).add(listener)
        try:
            yield listener
        finally:
            for tenant_id in tenants:
                heard = self._listeners.get(tenant_id)
                if heard is not None:
                    heard.discard(listener)
                    if not heard:
                        del self._listeners[tenant_id]

    def _all_listeners(self) -> set[LiveListener]:
        return set().union(*self._listeners.values())

    def publish(self, changes: set[Change]) -> None:
        """Committed changes, from any thread; in-process, straight to the listeners."""
        self._on_loop(self._deliver, changes)

    def _on_loop(self, fn: Any, *args: Any) -> None:
        """`fn(*args)` on the bus's loop: now if called on it, else soon (any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn(*args)
        else:
            loop.call_soon_threadsafe(fn, *args)

    def _deliver(self, changes: set[Change], *, lost: bool = False) -> None:
        if lost:
            for listener in self._all_listeners():
                listener.add(set(), lost=True)
        by_tenant: dict[uuid.UUID, set[Change]] = {}
        for change in changes:
            if change.tenant_id in self._listeners:
                by_tenant.setdefault(change.tenant_id, set()).add(change)
        for tenant_id, theirs in by_tenant.items():
            for listener in self._listeners[tenant_id]:
                listener.add(theirs)

    def release_all(self) -> None:
        """Answer every held poll at once: the process is going away."""
        self.closing = True

        def _release() -> None:
            for listener in self._all_listeners():
                listener.closed = True
                listener.add(set())
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
        self._sender: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._outbox: set[Change] = set()
        self._outbox_filled = asyncio.Event()

    async def start(self) -> None:
        await super().start()
        self._task = asyncio.create_task(self._listen_forever(), name="dockyard-bus")
        self._sender = asyncio.create_task(self._send_forever(), name="dockyard-bus-live")
        await asyncio.wait_for(self._ready.wait(), timeout=30)

    def publish(self, changes: set[Change]) -> None:
        """Into the outbox: every replica's listeners (this one's too) hear it from
        PostgreSQL, once."""
        self._on_loop(self._post, changes)

    def _post(self, changes: set[Change]) -> None:
        self._outbox |= changes
        self._outbox_filled.set()

    async def _send_forever(self) -> None:
        import psycopg

        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True
                ) as conn:
                    while True:
                        await self._outbox_filled.wait()
                        self._outbox_filled.clear()
                        batch, self._outbox = sorted(c.encode() for c in self._outbox), set()
                        for i in range(0, len(batch), LIVE_BATCH):
                            payload = ",".join(batch[i : i + LIVE_BATCH])
                            await conn.execute("SELECT pg_notify(%s, %s)", (LIVE_CHANNEL, payload))
                        await asyncio.sleep(LIVE_GATHER_S)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                # What was being sent is lost: every listener re-reads what it watches.
                log.warning("bus: live sender's connection lost (%s); reconnecting", e)
                self._deliver(set(), lost=True)
                await asyncio.sleep(1.0)

    def _heard(self, channel: str, payload: str) -> None:
        try:
            if channel == LIVE_CHANNEL:
                self._deliver({Change.decode(x) for x in payload.split(",")})
            else:
                self._wake_now({uuid.UUID(x) for x in payload.split(",")})
        except ValueError:
            log.warning("bus: ignoring a malformed notification on %s", channel)

    @property
    def listening(self) -> bool:
        return self._ready.is_set()

    async def stop(self) -> None:
        await super().stop()
        for task in (self._task, self._sender):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _listen_forever(self) -> None:
        import psycopg

        delay = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    await conn.execute(f"LISTEN {LIVE_CHANNEL}")
                    self._ready.set()
                    delay = 0.5
                    async for note in conn.notifies():
                        self._heard(note.channel, note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                # Notifications sent while we were away are lost: wake every held poll so
                # each re-reads its sequence, then listen again.
                log.warning("bus: listening connection lost (%s); reconnecting", e)
                self._ready.clear()  # not ready until it listens again (/readyz)
                self.forget_all()
                self._wake_now(set(self._waiters))
                self._deliver(set(), lost=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)


_buses: weakref.WeakKeyDictionary[Engine, Bus] = weakref.WeakKeyDictionary()
"""The bus each database's committed changes go to (`Bus.attach`)."""


@event.listens_for(ScopedSession, "after_flush")
def _noticed(session: Session, _flush: Any) -> None:
    if session.bind in _buses:
        live.noticed(session)


@event.listens_for(ScopedSession, "after_commit")
def _committed(session: Session) -> None:
    changes = live.take(session)
    if changes and session.bind in _buses:  # `in`: a session without a bind is no key
        _buses[session.bind].publish(changes)  # type: ignore[index]


@event.listens_for(ScopedSession, "after_rollback")
def _rolled_back(session: Session) -> None:
    live.take(session)


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
