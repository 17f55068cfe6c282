"""What operators and their load balancers ask a replica: alive, ready, and its figures.

- `/livez`: the process answers (its event loop runs). A restart is the only cure for a no.
- `/readyz`: this replica should get traffic: not draining (a stop was asked for and its
  held polls were released), its database answers within two seconds on a connection of
  the check's own (busy is not unready), and its bus listens
  (a replica that misses other replicas' wake-ups would hold polls past their commands).
  503 with the reasons otherwise, so a proxy's health check moves agents elsewhere.
- `/metrics`: the Prometheus text format, read at scrape time from the live objects
  (prometheus_client, a custom collector per app: two apps in one test process never share
  figures). `/healthz` stays as it was for scripts that count held polls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dockyard.cloud.services import Services

READY_DB_TIMEOUT_S = 2.0


class _Figures(Collector):
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def collect(self) -> Iterator[Metric]:
        svc = self.svc
        yield GaugeMetricFamily(
            "dockyard_held_polls", "Agent polls held open on this replica", value=svc.bus.waiting
        )
        yield GaugeMetricFamily(
            "dockyard_draining", "1 once a stop was asked for", value=int(svc.bus.closing)
        )
        yield GaugeMetricFamily(
            "dockyard_bus_listening",
            "1 while wake-ups from other replicas reach this one",
            value=int(svc.bus.listening),
        )
        slots = GaugeMetricFamily(
            "dockyard_db_slots", "Database work slots (threads) by use", labels=["state"]
        )
        borrowed = int(svc.db_slots.borrowed_tokens)
        slots.add_metric(["busy"], borrowed)
        slots.add_metric(["free"], int(svc.db_slots.total_tokens) - borrowed)
        yield slots
        batches = CounterMetricFamily(
            "dockyard_batches", "Batched transactions run, by kind", labels=["kind"]
        )
        requests = CounterMetricFamily(
            "dockyard_batched_requests", "Agent requests carried by batches", labels=["kind"]
        )
        for kind, batcher in (("poll", svc.poll_reader), ("ack", svc.ack_writer)):
            batches.add_metric([kind], batcher.batches)
            requests.add_metric([kind], batcher.requests)
        yield batches
        yield requests


def _ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def routes(svc: Services) -> list[Route]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Figures(svc))
    # The readiness ping has a connection of its own, outside the work pool and its slots:
    # queued behind a burst of work it timed out, and the proxy took every busy replica
    # out at once (seen with 300 agents enrolling through HAProxy).
    pinger = create_engine(svc.db.url, poolclass=NullPool)

    async def livez(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def readyz(request: Request) -> Response:
        problems = []
        if svc.bus.closing:
            problems.append("draining: a stop was asked for")
        if not svc.bus.listening:
            problems.append("bus: not listening for other replicas' wake-ups")
        try:
            await asyncio.wait_for(asyncio.to_thread(_ping, pinger), READY_DB_TIMEOUT_S)
        except TimeoutError:
            problems.append(f"database: no answer within {READY_DB_TIMEOUT_S:g} s")
        except Exception as e:  # any failure to reach it is the answer, not an error
            problems.append(f"database: {type(e).__name__}")
        if problems:
            return JSONResponse({"ready": False, "problems": problems}, status_code=503)
        return JSONResponse({"ready": True})

    async def metrics(request: Request) -> Response:
        body = await asyncio.to_thread(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return [Route("/livez", livez), Route("/readyz", readyz), Route("/metrics", metrics)]
