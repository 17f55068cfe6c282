"""The floor for `poll_latency.py`: the cloud's server stack holding polls and nothing else.

    .venv/bin/python bench/poll_floor.py --port PORT

uvicorn and starlette with the cloud's own server settings (`cloud/server.py`), no TLS as
in the bench, and no database, tokens, tenancy or journal: a poll names its agent in the
bearer header and is held on an asyncio future until `POST /issue` names that agent (the
signal), or until its hold runs out. A hold lasts what the cloud's would (`holding.py`:
80-100% of `wait`, 20-100% for the first hold after news or after connecting), so the same
agents come back at the same rate and the floor carries the same background of re-polls
(held for the whole `wait`, its agents returned in waves every 25 s). The process's collector
is tuned as the cloud's is (`collector.tune`). `POST /agent/v1/acks` answers at once. What the
cloud's latency is above this floor is ours; what the floor itself costs on a machine is
the machine's. `GET /healthz` counts held polls as the cloud's does.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dockyard.cloud import collector
from dockyard.cloud.settings import Settings


class Floor:
    def __init__(self) -> None:
        self.held: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.pending: dict[str, list[dict[str, Any]]] = {}
        self.seq = itertools.count(1)
        self.settled: set[str] = set()
        """Agents whose last answer was quiet: their next hold is a steady one."""

    def share(self, agent: str) -> float:
        """The share of `wait` a hold lasts, as `holding.hold_share` draws it."""
        if agent in self.settled:
            return random.uniform(0.8, 1.0)
        self.settled.add(agent)
        return random.uniform(0.2, 1.0)

    async def poll(self, request: Request) -> Response:
        agent = request.headers.get("authorization", "").removeprefix("Bearer ")
        wait = min(float(request.query_params.get("wait", "0")), 25.0)
        entries = self.pending.pop(agent, [])
        if not entries and wait > 0:
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self.held[agent] = future
            try:
                entries = [await asyncio.wait_for(future, wait * self.share(agent))]
            except TimeoutError:
                entries = []
            finally:
                if self.held.get(agent) is future:
                    del self.held[agent]
        if entries:
            self.settled.discard(agent)
        last = max((e["seq"] for e in entries), default=0)
        return JSONResponse({"entries": entries, "last_seq": last, "tag": "floor"})

    async def issue(self, request: Request) -> Response:
        """One entry for each named agent: its held poll answers now, or its next one."""
        agents = json.loads(await request.body())["agents"]
        items = []
        for agent in agents:
            seq = next(self.seq)
            entry = {"kind": "command", "command_id": f"floor-{seq}", "seq": seq}
            future = self.held.pop(agent, None)
            if future is not None and not future.done():
                future.set_result(entry)
            else:
                self.pending.setdefault(agent, []).append(entry)
            items.append({"id": entry["command_id"]})
        return JSONResponse({"items": items})

    async def acks(self, request: Request) -> Response:
        await request.body()
        return JSONResponse({"acked": True})

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"held_polls": len(self.held)})


def app() -> Starlette:
    floor = Floor()
    return Starlette(
        routes=[
            Route("/agent/v1/poll", floor.poll),
            Route("/issue", floor.issue, methods=["POST"]),
            Route("/agent/v1/acks", floor.acks, methods=["POST"]),
            Route("/healthz", floor.healthz),
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    application = app()
    collector.tune(Settings.model_fields["gc_full_interval_s"].default)
    config = uvicorn.Config(
        application,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        timeout_graceful_shutdown=10,
        proxy_headers=False,
        server_header=False,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
