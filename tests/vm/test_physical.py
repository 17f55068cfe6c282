"""Physical hosts: a hypervisor host that ran no VM for the whole period is reported idle,
and powered off through its BMC's Redfish interface after the same notice (sushy-tools)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dockyard.agent.clock import ManualClock
from dockyard.agent.modules.vm import module_at
from dockyard.agent.modules.vm.drivers.base import LoginFailed
from dockyard.agent.modules.vm.drivers.redfish import RedfishPower
from dockyard.agent.protocol.vm import PowerAction

from ..peers.libvirt_hosts import Domain, host_file
from ..peers.redfish import Bmc

START = datetime(2026, 2, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def bmc(tmp_path: Path) -> Any:
    server = Bmc(tmp_path / "bmc", {"kvm2": "On", "spare": "On"}).start()
    yield server
    server.stop()


def test_an_idle_host_is_reported_and_powered_off_through_redfish(
    tmp_path: Path, bmc: Any, smtp: Any
) -> None:
    hosts = [
        {"name": "kvm1", "uri": host_file(tmp_path, "kvm1", 8, 32768, [Domain("web1")])},
        {
            "name": "kvm2",
            "uri": host_file(tmp_path, "kvm2", 8, 32768, [Domain("old", running=False)]),
        },
        {"name": "kvm3", "uri": host_file(tmp_path, "kvm3", 8, 32768, [])},
    ]
    clock = ManualClock(START)
    module = module_at(tmp_path / "vm", clock)
    try:
        module.endpoints.add(
            "lab", {"kind": "libvirt", "hosts": hosts, "bmcs": {"kvm2": bmc.config("kvm2")}}
        )
        module.set_local_policy(
            {
                "signals": ["net"],
                "idle_days": 2,
                "sample_interval_s": 86400,
                "default_contact": "ops@example.com",
                "budget_share": 1,
            }
        )
        module.update_settings(smtp=smtp.config())
        for _ in range(4):
            module.discover(clock())
            module.collect(clock())
            clock.advance(timedelta(days=1))
        module.discover(clock())
        module.collect(clock())
        report = module.run_lifecycle(clock())
        assert [d.native_id for d in report.proposed] == ["host:kvm2"]
        states = {
            s.vm.name: module.store.evaluation("lab", s.vm.native_id)
            for s in module.store.vms(kind="host")
        }
        assert states["kvm1"]["state"] == "active"  # web1 runs there
        assert states["kvm3"]["state"] == "idle"
        assert any("reported only" in r for r in states["kvm3"]["reasons"])
        assert "ran no powered-on VM" in states["kvm2"]["reasons"][0]
        assert [m["To"] for m in smtp.wait(1)] == ["ops@example.com"]
        assert "kvm2" in smtp.messages[0]["Subject"]

        clock.advance(timedelta(hours=25))
        module.discover(clock())
        module.collect(clock())
        assert bmc.power_state("kvm2") == "On"
        report = module.run_lifecycle(clock())  # the notice ran out: act, and wait for the BMC
        assert report.acted == ["kvm2"]
        assert bmc.power_state("kvm2") == "Off"
        host = module.store.find("host:kvm2")[0]
        assert host.off_since == clock()
        assert bmc.power_state("spare") == "On"
    finally:
        module.close()


def test_a_bmc_refuses_a_wrong_password(bmc: Any) -> None:
    power = RedfishPower("spare", bmc.config("spare", password="wrong"))
    with pytest.raises(LoginFailed, match="refused"):
        power.power(PowerAction.SHUTDOWN)
    assert bmc.power_state("spare") == "On"
