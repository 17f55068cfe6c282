"""Pooled connections on PostgreSQL: pinged after sitting idle, trusted when just used, and a
connection the server dropped never fails more than the one statement that found it."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import exc, text

from dockyard.cloud.store import db as store_db
from dockyard.cloud.store.db import Database


def _backend_pid(database: Database) -> int:
    with database.engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _kill(database: Database, pid: int) -> None:
    with database.engine.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        conn.commit()


def _count_pings(database: Database, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    pings = [0]
    dialect = database.engine.dialect
    real = dialect.do_ping

    def counted(dbapi: Any) -> bool:
        pings[0] += 1
        return real(dbapi)

    monkeypatch.setattr(dialect, "do_ping", counted)
    return pings


def test_an_idle_connection_is_pinged_and_a_dead_one_replaced(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = Database(pg_url, pool_size=1)
    try:
        victim = _backend_pid(database)  # the pool's one connection, now checked in
        killer = Database(pg_url, pool_size=1)
        _kill(killer, victim)
        killer.dispose()
        monkeypatch.setattr(store_db, "PING_IDLE_S", 0.0)  # every checkout counts as idle
        pings = _count_pings(database, monkeypatch)
        assert _backend_pid(database) != victim, "the ping found it dead; a new one served"
        assert pings[0] >= 1
    finally:
        database.dispose()


def test_a_connection_just_used_is_not_pinged_and_a_dead_one_fails_once(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_db, "PING_IDLE_S", 3600.0)  # every checkout counts as fresh
    database = Database(pg_url, pool_size=1)
    pings = _count_pings(database, monkeypatch)
    try:
        victim = _backend_pid(database)
        killer = Database(pg_url, pool_size=1)
        _kill(killer, victim)
        killer.dispose()
        with pytest.raises(exc.OperationalError):
            _backend_pid(database)  # unpinged, so its statement meets the dead connection
        assert _backend_pid(database) != victim, "the pool dropped it; the next one works"
        assert pings[0] == 0, "a connection back from work a moment ago is not pinged"
    finally:
        database.dispose()
