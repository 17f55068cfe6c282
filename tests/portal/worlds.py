"""A tenant worth looking at in the portal: two agents (one enrolled with the noop and vm
modules, one docked and reporting), a running VM with its idleness judgement, an archived
one, and any more VMs a test asks for, reported through the real agent API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dockyard.agent import protocol as p
from dockyard.cloud.store.db import Database

from ..factories import World, enrol_agent, make_world
from ..integration.test_vault_brokered import docked_link
from ..procs import Cloud
from ..vm.test_cloud_archive import figures, send, vm

BUSY = {
    "state": "active",
    "at": "2026-06-04T09:00:00+00:00",
    "window_start": "2026-06-01T00:00:00+00:00",
    "window_end": "2026-06-04T00:00:00+00:00",
    "reasons": ["cpu peak reached 42% on 2026-06-02 (threshold 5%)"],
    "thresholds": {"cpu": 5.0},
    "statistics": {"cpu": "peak"},
    "days": [
        {"day": f"2026-06-0{d}T00:00:00+00:00", "figures": {"cpu": cpu}}
        for d, cpu in ((1, 3.5), (2, 42.0), (3, 2.0))
    ],
}
"""web-01's last judgement, as an agent sends it with the inventory: active on one day."""


def stocked(cloud: Cloud, pg: Database, tmp_path: Path, *more: dict[str, Any]) -> World:
    world = make_world(pg, flow=p.FlowMode.METADATA, plan="standard")
    enrol_agent(world, tmp_path, modules=("noop", "vm"))
    link = docked_link(cloud, world, tmp_path, p.FlowMode.METADATA)
    send(
        link,
        [
            vm("web-01", "running", power_state="poweredOn") | {"idleness": BUSY},
            vm("old-db", "archived", figures(8 << 30, 3 << 30)),
            *more,
        ],
    )
    return world
