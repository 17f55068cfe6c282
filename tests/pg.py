"""The PostgreSQL the tests use: the machine's own (DOCKYARD_TEST_PG, default the local
server), else a throwaway one started by pgserver. Never a skip."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"


def _reachable(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


@contextmanager
def admin_url() -> Iterator[str]:
    url = os.environ.get("DOCKYARD_TEST_PG", DEFAULT)
    if _reachable(url):
        yield url
        return
    import pgserver  # a wheel that carries PostgreSQL's binaries

    with tempfile.TemporaryDirectory(prefix="dockyard-pg-") as folder:
        server = pgserver.get_server(folder, cleanup_mode="stop")
        yield server.get_uri()


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new database for this test run, dropped at the end; yields a SQLAlchemy URL."""
    with admin_url() as admin:
        name = f"dockyard_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        base, _, rest = admin.rpartition("/")
        query = "?" + rest.split("?", 1)[1] if "?" in rest else ""
        url = f"{base}/{name}{query}"
        try:
            yield url.replace("postgresql://", "postgresql+psycopg://", 1)
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
