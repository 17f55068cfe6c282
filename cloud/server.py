"""Run the cloud under uvicorn, releasing held polls the moment a stop is asked for.

uvicorn waits for open requests before it runs the app's shutdown, and a held poll may stay
open 25 s; so on SIGTERM/SIGINT we first answer every held poll ("come back shortly"), and
only then let uvicorn drain. Agents reconnect to another replica, or to this one restarted.
"""

from __future__ import annotations

import logging
from types import FrameType
from typing import Any

import uvicorn
from sqlalchemy import text

from dockyard.cloud import collector
from dockyard.cloud.app import create_app
from dockyard.cloud.settings import Settings
from dockyard.cloud.store import migrate
from dockyard.cloud.store.db import make_engine

log = logging.getLogger(__name__)

MIGRATION_LOCK = 7_420_001


def migrate_database(settings: Settings) -> None:
    """Bring the schema to head; on PostgreSQL under an advisory lock, so that replicas
    starting together do not race."""
    url = settings.resolved_database_url()
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(url, pool_size=1)
    try:
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
                try:
                    migrate.upgrade(engine)
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
        else:
            migrate.upgrade(engine)
    finally:
        engine.dispose()


class CloudServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: Any) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._app.state.services.bus.release_all()
        super().handle_exit(sig, frame)


def serve(settings: Settings, *, migrate_first: bool = True) -> None:
    if migrate_first:
        migrate_database(settings)
    app = create_app(settings)
    collector.tune(settings.gc_full_interval_s)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # uvicorn's records go to the handler cloud/logs.py installed
        ssl_certfile=str(settings.tls_certfile) if settings.tls_certfile else None,
        ssl_keyfile=str(settings.tls_keyfile) if settings.tls_keyfile else None,
        timeout_graceful_shutdown=10,
        proxy_headers=False,
        server_header=False,
        # GraphQL subscriptions (api/graphql/live_app.py); a socket's messages are small.
        ws="websockets-sansio",
        ws_max_size=64 * 1024,
    )
    CloudServer(config, app).run()
