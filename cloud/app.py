"""create_app(settings): wires the services and the transports, and nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from importlib import import_module

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from dockyard.agent.protocol import BASE_PATH
from dockyard.cloud import scheduler
from dockyard.cloud.api.agent.routes import routes as agent_routes
from dockyard.cloud.api.auth.routes import routes as auth_routes
from dockyard.cloud.api.blob_urls import routes as blob_routes
from dockyard.cloud.api.health import routes as health_routes
from dockyard.cloud.api.portal import routes as portal_routes
from dockyard.cloud.api.request_ids import RequestIds
from dockyard.cloud.auth.agent_tokens import AgentTokens
from dockyard.cloud.blobs import BlobStore, LocalBlobs, S3Blobs
from dockyard.cloud.bus import Bus, PostgresBus, libpq_conninfo
from dockyard.cloud.domain import agents, commands, live, modules
from dockyard.cloud.domain.clock import Clock, SystemClock
from dockyard.cloud.services import Services
from dockyard.cloud.settings import Settings
from dockyard.cloud.store.db import Database
from dockyard.cloud.tracing import tracing

log = logging.getLogger(__name__)


def build_services(settings: Settings, clock: Clock | None = None) -> Services:
    clock = clock or SystemClock()
    db = Database(settings.resolved_database_url(), pool_size=settings.db_pool_size)
    bus: Bus = PostgresBus(libpq_conninfo(db.url)) if db.is_postgres else Bus()
    db.on_wake = bus.wake
    bus.attach(db)
    tokens = AgentTokens(
        settings.signing_secret(), settings.token_url, clock, settings.access_token_ttl_s
    )
    return Services(settings, db, bus, clock, tokens, blob_store(settings))


def blob_store(settings: Settings) -> BlobStore:
    if settings.blob_s3_bucket:
        return S3Blobs(
            settings.blob_s3_bucket,
            settings.blob_s3_prefix,
            endpoint_url=settings.blob_s3_endpoint,
            region_name=settings.blob_s3_region,
        )
    return LocalBlobs(settings.resolved_blob_dir(), settings.public_url, settings.signing_secret())


# Last-seen times are written this many agents per transaction, so one sweep never holds
# a database slot, the interpreter or the agents' rows long enough to delay a delivery.
SEEN_BATCH = 100


def _sweep_commands(svc: Services) -> None:
    with svc.db.transaction() as session:
        commands.sweep(session, svc.clock)


def _record_seen(
    svc: Services, seen: dict[uuid.UUID, datetime], skews: dict[uuid.UUID, int]
) -> set[uuid.UUID]:
    with svc.db.transaction() as session:
        live.came_online(session, seen)
        return agents.record_seen(session, seen, skews)


async def _sweep_forever(svc: Services) -> None:
    """Close lapsed and overdue commands and store last-seen times; every replica may run
    it, the UPDATEs are idempotent."""
    while True:
        await asyncio.sleep(svc.settings.sweep_interval_s)
        seen = svc.bus.take_seen()
        skews = svc.bus.take_skews()
        try:
            await svc.run_db(_sweep_commands, svc)
            items = sorted(seen.items())
            for i in range(0, len(items), SEEN_BATCH):
                batch = dict(items[i : i + SEEN_BATCH])
                busy = await svc.run_db(_record_seen, svc, batch, skews)
                for agent_id in busy:  # held by another transaction: the next sweep
                    svc.bus.seen.setdefault(agent_id, batch[agent_id])
                    if agent_id in skews:
                        svc.bus.skews.setdefault(agent_id, skews[agent_id])
        except Exception:
            log.exception("sweep failed; will retry")
            svc.bus.seen = seen | svc.bus.seen
            svc.bus.skews = skews | svc.bus.skews


def module_routes() -> list[BaseRoute]:
    """Each module's HTTP routes, in registry order (`CloudModule.routes`)."""
    found: list[BaseRoute] = []
    for module in modules.registry():
        if module.routes:
            found.extend(import_module(module.routes).routes())
    return found


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("dockyard")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source tree never installed
        return "unknown"


def create_app(settings: Settings, clock: Clock | None = None) -> Starlette:
    from dockyard.cloud.api.graphql import graphiql
    from dockyard.cloud.api.graphql.app import graphql_app
    from dockyard.cloud.api.graphql.live_app import live_app

    svc = build_services(settings, clock)
    traced = tracing(settings, svc.db.engine, _version())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await svc.bus.start()
        sweeper = asyncio.create_task(_sweep_forever(svc))
        timers = asyncio.create_task(scheduler.forever(svc))
        try:
            yield
        finally:
            svc.bus.release_all()
            for task in (sweeper, timers):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await svc.bus.stop()
            svc.db.dispose()
            traced.shutdown()

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "held_polls": svc.bus.waiting})

    app = Starlette(
        routes=[
            Route("/healthz", health),
            *health_routes(svc),
            Mount(BASE_PATH, routes=agent_routes()),
            *blob_routes(),
            *auth_routes(svc),
            *module_routes(),
            *graphiql.routes(),
            *portal_routes(),
            Route("/graphql", graphql_app(svc), methods=["GET", "POST"]),
            WebSocketRoute("/graphql", live_app(svc)),
        ],
        middleware=[*traced.middleware, Middleware(RequestIds)],
        lifespan=lifespan,
    )
    app.state.services = svc
    return app
