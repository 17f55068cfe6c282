"""/livez, /readyz and /metrics: readiness says no for each reason a proxy should move
agents away, and a real Prometheus scrapes the figures."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from dockyard.cloud.app import create_app
from dockyard.cloud.domain import commands
from dockyard.cloud.settings import Settings
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.migrate import upgrade

from ..factories import enrolment_secret, make_world, system
from ..peers.prometheus import Prometheus
from ..procs import SECRET, Agent, Cloud, eventually


def test_ready_until_draining_and_not_ready_without_its_database(tmp_path: Path) -> None:
    path = tmp_path / "dockyard.db"
    db = Database(f"sqlite:///{path}")
    upgrade(db.engine)
    db.dispose()
    settings = Settings(database_url=f"sqlite:///{path}", secret_key=SECRET, data_dir=tmp_path)
    app = create_app(settings)
    svc = app.state.services

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://cloud") as client,
        ):
            assert (await client.get("/livez")).json() == {"live": True}
            assert (await client.get("/readyz")).json() == {"ready": True}
            path.rename(tmp_path / "away.db")
            path.mkdir()  # where the database was, nothing a connection can open
            try:
                down = await client.get("/readyz")
                assert down.status_code == 503
                assert down.json()["problems"] == ["database: OperationalError"]
                assert str(tmp_path) not in down.text, "no connection detail reaches a client"
            finally:
                path.rmdir()
                (tmp_path / "away.db").rename(path)
            assert (await client.get("/readyz")).status_code == 200
            svc.bus.release_all()
            draining = await client.get("/readyz")
            assert draining.status_code == 503
            assert draining.json()["problems"] == ["draining: a stop was asked for"]
            assert (await client.get("/livez")).status_code == 200

    asyncio.run(scenario())


def test_prometheus_scrapes_held_polls_batches_deliveries_and_the_fleet(
    pg_url: str, pg: Database, tmp_path: Path
) -> None:
    """A real agent holds a poll; Prometheus, scraping every 200 ms, sees it and the
    batched poll reads that served it; a command delivered to it shows in this replica's
    delivery figures, and its job and the agent in the fleet's."""
    cloud = Cloud(pg_url, tmp_path / "cloud", env={"DOCKYARD_METRICS_FLEET_EVERY_S": "0.2"})
    cloud.start()
    prometheus = Prometheus([f"127.0.0.1:{cloud.port}"]).start()
    agent = Agent(tmp_path / "agent")
    try:
        text = httpx.get(f"{cloud.url}/metrics").text
        names = {f.name for f in text_string_to_metric_families(text)}
        assert {
            "dockyard_held_polls",
            "dockyard_db_slots",
            "dockyard_batches",
            "dockyard_delivered_entries",
            "dockyard_delivering_poll_seconds",
            "dockyard_fleet_read_ok",
        } <= names
        world = make_world(pg)
        agent.dock(cloud.url, enrolment_secret(world))
        agent.start()

        def scraped(expr: str) -> float | None:
            result = prometheus.query(expr)
            return float(result[0]["value"][1]) if result else None

        eventually(lambda: scraped("dockyard_held_polls") == 1, timeout=30, what="a held poll")
        batches = scraped('dockyard_batches_total{kind="poll"}')
        assert batches is not None
        assert batches >= 1
        assert scraped("dockyard_bus_listening") == 1
        assert scraped('dockyard_delivered_entries_total{kind="command"}') == 0

        # The fleet's figures count every tenant of the database, other tests' too.
        succeeded = scraped('dockyard_jobs{state="succeeded"}') or 0
        agent_id = uuid.UUID(
            json.loads(agent.cli("status", "--json").stdout)["links"][0]["agent_id"]
        )
        with system(pg, world.tenant_id) as ctx:
            commands.issue(ctx, agent_id, "noop.append", {"text": "scraped"})
        eventually(
            lambda: scraped('dockyard_jobs{state="succeeded"}') == succeeded + 1,
            timeout=30,
            what="the job",
        )
        assert scraped('dockyard_delivered_entries_total{kind="command"}') == 1
        assert scraped("dockyard_delivering_poll_seconds_count") == 1
        assert scraped('dockyard_delivering_poll_seconds_bucket{le="+Inf"}') == 1
        online = scraped('dockyard_agents{state="online"}')
        assert online is not None
        assert online >= 1
        assert scraped("dockyard_fleet_read_ok") == 1
    finally:
        if agent.proc is not None:
            agent.stop()
        prometheus.stop()
        cloud.stop()
