"""What operators and their load balancers ask a replica: alive, ready, and its figures.

- `/livez`: the process answers (its event loop runs). A restart is the only cure for a no.
- `/readyz`: this replica should get traffic: not draining (a stop was asked for and its
  held polls were released), its database answers within two seconds on a connection of
  the check's own (busy is not unready), and its bus listens
  (a replica that misses other replicas' wake-ups would hold polls past their commands).
  503 with the reasons otherwise, so a proxy's health check moves agents elsewhere.
- `/metrics`: the Prometheus text format, read at scrape time from the live objects
  (prometheus_client, a custom collector per app: two apps in one test process never share
  figures): held polls, the work slots, batches, what this replica's poll answers delivered
  and how long those polls took (`cloud/meter.py`), metadata taken in by kind; and figures
  across every tenant (`domain/fleet.py`: jobs and agents by state, what archives hold),
  read at most every `metrics_fleet_every_s` on a connection of the scrape's own, so a
  scraper cannot turn /metrics into load. `/healthz` stays as it was for scripts that
  count held polls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dockyard.cloud.domain import fleet
from dockyard.cloud.meter import Meter
from dockyard.cloud.services import Services

log = logging.getLogger(__name__)

READY_DB_TIMEOUT_S = 2.0


class _Fleet:
    """The last read of the fleet's figures, and when; a failed read keeps the last good
    one and says so (`dockyard_fleet_read_ok 0`) rather than failing the whole scrape."""

    def __init__(self, engine: Engine, svc: Services) -> None:
        self.engine, self.svc = engine, svc
        self.every_s = svc.settings.metrics_fleet_every_s
        self.gauges: list[fleet.Gauge] = []
        self.read_at = -self.every_s
        self.ok = True

    def refresh(self) -> None:
        if time.monotonic() - self.read_at < self.every_s:
            return
        try:
            with Session(self.engine) as session:
                self.gauges = fleet.gauges(session, self.svc.clock.now())
            self.ok = True
        except Exception:  # the database's trouble is /readyz's to report, not a 500 here
            log.warning("the fleet's figures could not be read", exc_info=True)
            self.ok = False
        self.read_at = time.monotonic()


class _Figures(Collector):
    def __init__(self, svc: Services, fleet_figures: _Fleet) -> None:
        self.svc = svc
        self.fleet = fleet_figures

    def collect(self) -> Iterator[Metric]:
        svc = self.svc
        yield from self._meter(svc.meter)
        yield from self._fleet()
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

    def _meter(self, meter: Meter) -> Iterator[Metric]:
        delivered = CounterMetricFamily(
            "dockyard_delivered_entries",
            "Entries this replica's poll answers handed to agents, by kind",
            labels=["kind"],
        )
        for kind in ("command", "policy"):
            delivered.add_metric([kind], meter.delivered[kind])
        yield delivered
        took = HistogramMetricFamily(
            "dockyard_delivering_poll_seconds",
            "From a poll's arrival to its answer, for answers that carried entries",
        )
        took.add_metric([], meter.delivering.cumulative(), meter.delivering.total)
        yield took
        size = CounterMetricFamily(
            "dockyard_metadata_bytes",
            "Request bytes of metadata batches taken in, by module and kind",
            labels=["module", "kind"],
        )
        records = CounterMetricFamily(
            "dockyard_metadata_records",
            "Records of metadata batches taken in, by module and kind",
            labels=["module", "kind"],
        )
        for (module, kind), n in sorted(meter.metadata_bytes.items()):
            size.add_metric([module, kind], n)
            records.add_metric([module, kind], meter.metadata_records[module, kind])
        yield size
        yield records

    def _fleet(self) -> Iterator[Metric]:
        self.fleet.refresh()
        yield GaugeMetricFamily(
            "dockyard_fleet_read_ok",
            "1 when the last read of the fleet's figures worked",
            value=int(self.fleet.ok),
        )
        families: dict[str, GaugeMetricFamily] = {}
        for g in self.fleet.gauges:
            names = [k for k, _ in g.labels]
            family = families.setdefault(g.name, GaugeMetricFamily(g.name, g.help, labels=names))
            family.add_metric([v for _, v in g.labels], g.value)
        yield from families.values()


def _ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def routes(svc: Services) -> list[Route]:
    # The readiness ping has a connection of its own, outside the work pool and its slots:
    # queued behind a burst of work it timed out, and the proxy took every busy replica
    # out at once (seen with 300 agents enrolling through HAProxy). The fleet's figures use
    # the same engine, for the same reason.
    pinger = create_engine(svc.db.url, poolclass=NullPool)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Figures(svc, _Fleet(pinger, svc)))

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
