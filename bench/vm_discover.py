"""VM discovery and one idle-evaluation pass at scale, beside the floor they stand on.

vcsim (our launcher of govmomi's simulator) with 500 VMs across 8 hosts. Measured in one
run, each the median of --rounds:
- the floor: one raw `RetrievePropertiesEx` (continued page by page) of exactly the
  properties our driver reads, through pyvmomi, doing nothing with the answer;
- ours: `VsphereDriver.discover()` (the same read, turned into our inventory), and the
  module's whole discovery (driver plus storing it in the agent's SQLite);
- one idleness evaluation of every VM over 90 days of stored history.
Prints the ratios to the floor and the process's peak RSS; the last line is one JSON object.
Goal: discovery within 1.5x the raw call, the idle pass under 1 s for 500 VMs.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dockyard.agent.clock import ManualClock  # noqa: E402
from dockyard.agent.modules.vm import module_at  # noqa: E402
from dockyard.agent.modules.vm.drivers.base import Sample  # noqa: E402
from dockyard.agent.modules.vm.drivers.vsphere import (  # noqa: E402
    DATASTORE_PROPERTIES,
    HOST_PROPERTIES,
    VM_PROPERTIES,
    VsphereDriver,
    property_filter,
    vim,
    vmodl,
)
from dockyard.agent.protocol.vm import Signal  # noqa: E402
from tests.peers.vsphere_sim import Vcsim  # noqa: E402

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TYPES = [
    (vim.VirtualMachine, VM_PROPERTIES),
    (vim.HostSystem, HOST_PROPERTIES),
    (vim.Datastore, DATASTORE_PROPERTIES),
]


def median_s(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def raw_retrieve(driver: VsphereDriver) -> int:
    """The floor: the same property read, answer discarded."""
    content = driver.si.content
    view = content.viewManager.CreateContainerView(content.rootFolder, [t for t, _ in TYPES], True)
    pc = vmodl.query.PropertyCollector
    spec = property_filter(view, TYPES)
    collector = content.propertyCollector
    count = 0
    result = collector.RetrievePropertiesEx([spec], pc.RetrieveOptions(maxObjects=1000))
    while result is not None:
        count += len(result.objects)
        if not result.token:
            break
        result = collector.ContinueRetrievePropertiesEx(result.token)
    view.Destroy()
    return count


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vms", type=int, default=500)
    ap.add_argument("--hosts", type=int, default=8)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    sim = Vcsim(host=args.hosts, vm=args.vms, ds=2).start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            clock = ManualClock(NOW)
            module = module_at(Path(folder) / "vm", clock)
            module.endpoints.add("vc", {"kind": "vsphere", **sim.config()})
            driver = module.driver("vc")
            assert isinstance(driver, VsphereDriver)
            objects = raw_retrieve(driver)  # also warms the session and the type cache
            inventory = driver.discover()
            print(
                f"vcsim: {len(inventory.vms)} VMs, {len(inventory.hosts)} hosts, "
                f"{len(inventory.datastores)} datastores ({objects} objects)"
            )

            floor = median_s(lambda: raw_retrieve(driver), args.rounds)
            ours = median_s(driver.discover, args.rounds)
            whole = median_s(lambda: module.discover(clock()), args.rounds)

            # 90 days of history for every VM: one collection a day (the compact store
            # keeps one row per VM, day and signal whatever the sample rate).
            vms = [s.vm for s in module.store.vms("vc")]
            for day in range(args.days, 0, -1):
                at = NOW - timedelta(days=day)
                module.store.add_samples(
                    "vc",
                    [
                        Sample(
                            vm.native_id,
                            at,
                            {
                                Signal.CPU: 1.0 + (i % 7 == 0) * 50,
                                Signal.DISK: 10.0,
                                Signal.NET: 5.0,
                            },
                        )
                        for i, vm in enumerate(vms)
                    ],
                )
            policy = module.set_local_policy({"sample_interval_s": 86400, "idle_days": args.days})
            idle = module.lifecycle.evaluate(policy, clock())
            evaluate = median_s(lambda: module.lifecycle.evaluate(policy, clock()), args.rounds)
            module.close()
    finally:
        sim.stop()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ratio = ours / floor
    print(f"raw RetrievePropertiesEx (floor): {floor * 1000:8.1f} ms")
    print(
        f"driver discovery:                 {ours * 1000:8.1f} ms   ratio {ratio:.2f} (goal <= 1.5)"
    )
    print(f"module discovery (+ SQLite):      {whole * 1000:8.1f} ms   ratio {whole / floor:.2f}")
    print(
        f"idle pass, {len(vms)} VMs x {args.days} days:  {evaluate * 1000:8.1f} ms"
        f"   ({len(idle)} idle; goal < 1000 ms)"
    )
    print(f"peak RSS of this process (agent code and pyvmomi): {peak_mb:.0f} MB")
    print(
        json.dumps(
            {
                "vms": len(vms),
                "hosts": args.hosts,
                "days": args.days,
                "floor_ms": round(floor * 1000, 1),
                "discover_ms": round(ours * 1000, 1),
                "discover_ratio": round(ratio, 3),
                "module_discover_ms": round(whole * 1000, 1),
                "module_discover_ratio": round(whole / floor, 3),
                "idle_pass_ms": round(evaluate * 1000, 1),
                "idle_vms": len(idle),
                "peak_rss_mb": round(peak_mb, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
