"""Each driver against its real peer: vcsim, libvirt's test driver, moto's EC2/CloudWatch."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dockyard.agent.modules.vm.drivers import open_driver
from dockyard.agent.modules.vm.drivers.base import (
    DiskSpec,
    DriverError,
    LoginFailed,
    Unreachable,
    VmGone,
    VmSpec,
)
from dockyard.agent.modules.vm.placement import NoPlacement, choose_datastore, choose_host
from dockyard.agent.protocol.vm import HostChoice, PowerAction, Signal

from ..peers.libvirt_hosts import Domain, host_file
from ..peers.vsphere_sim import Vcsim

WINDOW = timedelta(minutes=5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- vSphere (vcsim) -------------------------------------------------------------------


def test_vsphere_discovers_vms_hosts_and_datastores(vcsim: Vcsim) -> None:
    driver = open_driver("vc", {"kind": "vsphere", **vcsim.config()})
    try:
        inventory = driver.discover()
    finally:
        driver.close()
    assert len(inventory.hosts) == 3
    assert {d.name for d in inventory.datastores} == {"LocalDS_0", "LocalDS_1"}
    host_ids = {h.native_id for h in inventory.hosts}
    for datastore in inventory.datastores:
        assert set(datastore.hosts) == host_ids  # every simulated host mounts every datastore
    assert len(inventory.vms) >= 2
    for vm in inventory.vms:
        assert vm.native_id.startswith("vm-")
        assert vm.host in host_ids
        assert vm.identifiers.instance_uuid
        assert vm.identifiers.bios_uuid
        assert vm.identifiers.macs
        assert vm.power_state in ("on", "off", "suspended")


def test_vsphere_samples_from_performance_counters_and_the_idle_mark(vcsim: Vcsim) -> None:
    """vcsim's own series are noisy and busy; our launcher flattens a VM marked vcsim:idle."""
    driver = open_driver("vc", {"kind": "vsphere", **vcsim.config()})
    try:
        vms = [v for v in driver.discover().vms if v.power_state == "on"]
        busy, quiet = vms[0], vms[1]
        _annotate(driver, quiet.native_id, "vcsim:idle")
        samples = {s.native_id: s for s in driver.sample(vms, datetime.now(UTC), WINDOW)}
    finally:
        _annotate(driver, vms[1].native_id, "")
        driver.close()
    assert set(samples[busy.native_id].values) >= {Signal.CPU, Signal.DISK, Signal.NET}
    assert samples[busy.native_id].values[Signal.CPU] > 0
    assert samples[busy.native_id].values[Signal.NET] > 0
    assert samples[quiet.native_id].values[Signal.CPU] == pytest.approx(0.01)
    assert samples[quiet.native_id].values[Signal.DISK] == 1
    assert samples[quiet.native_id].values[Signal.NET] == 1


def _annotate(driver, native_id: str, text: str) -> None:  # type: ignore[no-untyped-def]
    from pyVmomi import vim

    ref = vim.VirtualMachine(native_id, driver.si._stub)
    driver._wait(ref.ReconfigVM_Task(spec=vim.vm.ConfigSpec(annotation=text)))


def test_vsphere_power_cycle_and_a_vm_deleted_behind_our_back() -> None:
    sim = Vcsim(host=1, vm=2).start()
    driver = open_driver("vc", {"kind": "vsphere", **sim.config()})
    try:
        vm = next(v for v in driver.discover().vms if v.power_state == "on")
        assert driver.power(vm, PowerAction.SHUTDOWN) == "off"  # no tools: a power off
        assert driver.power(vm, PowerAction.SHUTDOWN) == "off"  # already off: nothing to do
        assert driver.power(vm, PowerAction.POWER_ON) == "on"
        assert driver.power(vm, PowerAction.SUSPEND) == "suspended"
        states = {v.native_id: v.power_state for v in driver.discover().vms}
        assert states[vm.native_id] == "suspended"
        from pyVmomi import vim

        ref = vim.VirtualMachine(vm.native_id, driver.si._stub)
        driver._wait(ref.PowerOffVM_Task())
        driver._wait(ref.Destroy_Task())
        with pytest.raises(VmGone):
            driver.power(vm, PowerAction.POWER_ON)
        assert vm.native_id not in {v.native_id for v in driver.discover().vms}
    finally:
        driver.close()
        sim.stop()


def test_vsphere_wrong_password_and_unreachable_endpoint(vcsim: Vcsim) -> None:
    wrong = open_driver("vc", {"kind": "vsphere", **vcsim.config(password="not-it")})
    with pytest.raises(LoginFailed, match="refused the user name or password"):
        wrong.discover()
    nobody = open_driver(
        "vc", {"kind": "vsphere", "host": "127.0.0.1", "port": _free_port(), "verify_tls": False}
    )
    with pytest.raises(Unreachable, match="cannot reach vCenter"):
        nobody.discover()


def test_vsphere_creates_a_vm_by_placement_with_its_disks() -> None:
    sim = Vcsim(host=3, vm=1, ds=2).start()
    driver = open_driver("vc", {"kind": "vsphere", **sim.config()})
    try:
        inventory = driver.discover()
        spec = VmSpec(
            "placed-1",
            cpus=2,
            memory_mb=64,
            disks=(DiskSpec(2), DiskSpec(1)),
            tags={"owner": "dev@example.com"},
        )
        host = choose_host(HostChoice.LEAST_ALLOCATED_SHARE, inventory.hosts, inventory.vms, spec)
        used = {h.native_id: 0 for h in inventory.hosts}
        for vm in inventory.vms:
            if vm.power_state == "on" and vm.host:
                used[vm.host] += vm.memory_mb
        assert used[host.native_id] == min(used.values())
        datastore = choose_datastore(host, inventory.datastores, spec)
        assert datastore.free_bytes == max(d.free_bytes for d in inventory.datastores)
        created = driver.create(spec, host, datastore)
        assert created.host == host.native_id
        assert created.cpus == 2
        assert created.memory_mb == 64
        assert created.tags["owner"] == "dev@example.com"
        from pyVmomi import vim

        ref = vim.VirtualMachine(created.native_id, driver.si._stub)
        disks = [d for d in ref.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]
        assert sorted(d.capacityInKB for d in disks) == [1 << 20, 2 << 20]
        assert all(d.backing.fileName.startswith(f"[{datastore.name}]") for d in disks)
    finally:
        driver.close()
        sim.stop()


def test_placement_skips_hosts_in_maintenance_and_says_why_nothing_fits(vcsim: Vcsim) -> None:
    driver = open_driver("vc", {"kind": "vsphere", **vcsim.config()})
    try:
        inventory = driver.discover()
    finally:
        driver.close()
    from dataclasses import replace

    hosts = [replace(h, maintenance=i < 2) for i, h in enumerate(inventory.hosts)]
    spec = VmSpec("x", memory_mb=64)
    assert choose_host(HostChoice.ROUND_ROBIN, hosts, inventory.vms, spec, 5) == hosts[2]
    all_down = [replace(h, maintenance=True) for h in inventory.hosts]
    with pytest.raises(NoPlacement, match="maintenance"):
        choose_host(HostChoice.LEAST_ALLOCATED_SHARE, all_down, inventory.vms, spec)
    with pytest.raises(NoPlacement, match="unallocated"):
        choose_host(
            HostChoice.LEAST_ALLOCATED_ABSOLUTE,
            hosts,
            inventory.vms,
            VmSpec("huge", memory_mb=1 << 22),
        )


# --- libvirt (test driver) -------------------------------------------------------------


@pytest.fixture
def kvm_hosts(tmp_path: Path) -> dict[str, object]:
    uris = [
        {
            "name": "kvm1",
            "uri": host_file(
                tmp_path,
                "kvm1",
                8,
                32768,
                [
                    Domain("web1", vcpus=2, memory_mb=4096, owner="alice@example.com"),
                    Domain("db1", vcpus=4, memory_mb=8192, running=False),
                ],
            ),
        },
        {"name": "kvm2", "uri": host_file(tmp_path, "kvm2", 16, 65536, [Domain("app1")])},
    ]
    return {"kind": "libvirt", "hosts": uris}


def test_libvirt_discovers_a_multi_host_node(kvm_hosts: dict[str, object]) -> None:
    driver = open_driver("lab", kvm_hosts)
    inventory = driver.discover()
    assert [(h.name, h.cpus, h.memory_mb) for h in inventory.hosts] == [
        ("kvm1", 8, 32768),
        ("kvm2", 16, 65536),
    ]
    by_name = {v.name: v for v in inventory.vms}
    assert by_name["web1"].host == "kvm1"
    assert by_name["app1"].host == "kvm2"
    assert by_name["web1"].power_state == "on"
    assert by_name["db1"].power_state == "off"
    assert by_name["web1"].tags["owner"] == "alice@example.com"
    assert by_name["web1"].datastores == ("pool-kvm1",)
    assert by_name["web1"].identifiers.bios_uuid == by_name["web1"].native_id
    assert by_name["web1"].cpus == 2
    assert by_name["web1"].memory_mb == 4096
    assert {d.name for d in inventory.datastores} == {"pool-kvm1", "pool-kvm2"}


def test_libvirt_rates_come_from_its_statistics(kvm_hosts: dict[str, object]) -> None:
    """The test driver keeps getCPUStats still and moves block and interface counters with
    the clock: CPU reads as 0%, disk and network as busy. The first collection has no rate."""
    driver = open_driver("lab", kvm_hosts)
    vms = [v for v in driver.discover().vms if v.power_state == "on"]
    assert driver.sample(vms, datetime.now(UTC), WINDOW) == []
    time.sleep(0.2)
    samples = driver.sample(vms, datetime.now(UTC), WINDOW)
    assert {s.native_id for s in samples} == {v.native_id for v in vms}
    for sample in samples:
        assert sample.values[Signal.CPU] == 0
        assert sample.values[Signal.DISK] > 1
        assert sample.values[Signal.NET] > 1


def test_libvirt_power_create_round_robin_and_gone(kvm_hosts: dict[str, object]) -> None:
    driver = open_driver("lab", kvm_hosts)
    inventory = driver.discover()
    web1 = next(v for v in inventory.vms if v.name == "web1")
    assert driver.power(web1, PowerAction.SHUTDOWN) == "off"
    assert driver.power(web1, PowerAction.POWER_ON) == "on"
    assert driver.power(web1, PowerAction.STANDBY) == "suspended"
    assert driver.power(web1, PowerAction.POWER_ON) == "on"
    assert driver.power(web1, PowerAction.SUSPEND) == "suspended"  # managed save
    placed = []
    for turn in range(2):
        spec = VmSpec(f"rr-{turn}", cpus=1, memory_mb=512)
        host = choose_host(HostChoice.ROUND_ROBIN, inventory.hosts, inventory.vms, spec, turn)
        created = driver.create(spec, host, choose_datastore(host, inventory.datastores, spec))
        placed.append(created.host)
        assert created.power_state == "off"
    assert placed == ["kvm1", "kvm2"]
    names = {v.name for v in driver.discover().vms}
    assert {"rr-0", "rr-1"} <= names
    import libvirt

    conn = driver._conns[kvm_hosts["hosts"][1]["uri"]]  # type: ignore[index]
    app1 = conn.lookupByName("app1")
    gone = next(v for v in inventory.vms if v.name == "app1")
    app1.destroy()
    app1.undefine()
    with pytest.raises(VmGone):
        driver.power(gone, PowerAction.POWER_ON)
    assert isinstance(conn, libvirt.virConnect)


def test_libvirt_unreachable_host_is_a_clear_error(tmp_path: Path) -> None:
    driver = open_driver("lab", {"kind": "libvirt", "hosts": [f"test://{tmp_path}/absent.xml"]})
    with pytest.raises(Unreachable, match="cannot connect"):
        driver.discover()
    with pytest.raises(DriverError, match="lists its hosts"):
        open_driver("lab", {"kind": "libvirt", "hosts": []})


# --- EC2 and CloudWatch (moto) ---------------------------------------------------------


def test_ec2_discovers_samples_and_powers(moto) -> None:  # type: ignore[no-untyped-def]
    moto.reset()
    ec2 = moto.client("ec2")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    started = ec2.run_instances(
        ImageId=image,
        MinCount=2,
        MaxCount=2,
        InstanceType="t3.small",
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [
                    {"Key": "Name", "Value": "batch"},
                    {"Key": "owner", "Value": "data@example.com"},
                ],
            }
        ],
    )
    ids = sorted(i["InstanceId"] for i in started["Instances"])
    now = datetime.now(UTC).replace(microsecond=0)
    moto.client("cloudwatch").put_metric_data(
        Namespace="AWS/EC2",
        MetricData=[
            {
                "MetricName": "CPUUtilization",
                "Timestamp": now - timedelta(minutes=2),
                "Value": 37.5,
                "Dimensions": [{"Name": "InstanceId", "Value": ids[0]}],
            },
            {
                "MetricName": "NetworkIn",
                "Timestamp": now - timedelta(minutes=2),
                "Value": 307200,
                "Dimensions": [{"Name": "InstanceId", "Value": ids[0]}],
            },
        ],
    )
    driver = open_driver("aws", moto.config())
    inventory = driver.discover()
    vms = {v.native_id: v for v in inventory.vms}
    assert sorted(vms) == ids
    assert vms[ids[0]].name == "batch"
    assert vms[ids[0]].tags["owner"] == "data@example.com"
    assert vms[ids[0]].identifiers.ec2_instance_id == ids[0]
    assert vms[ids[0]].host in {h.native_id for h in inventory.hosts}
    samples = {s.native_id: s for s in driver.sample(list(vms.values()), now, WINDOW)}
    assert samples[ids[0]].values[Signal.CPU] == 37.5
    assert samples[ids[0]].values[Signal.NET] == pytest.approx(307200 / 1024 / 300)
    assert Signal.DISK not in samples[ids[0]].values  # no datapoint: unknown, never zero
    assert ids[1] not in samples  # nothing at all reported for it
    assert driver.power(vms[ids[1]], PowerAction.SHUTDOWN) == "off"
    assert {v.native_id: v.power_state for v in driver.discover().vms}[ids[1]] == "off"
    assert driver.power(vms[ids[1]], PowerAction.POWER_ON) == "on"
    with pytest.raises(DriverError, match="no standby"):
        driver.power(vms[ids[0]], PowerAction.STANDBY)
    ec2.terminate_instances(InstanceIds=[ids[0]])
    with pytest.raises(VmGone):
        driver.power(vms[ids[0]], PowerAction.SHUTDOWN)


def test_ec2_unreachable_endpoint() -> None:
    driver = open_driver(
        "aws",
        {
            "kind": "ec2",
            "region": "eu-west-1",
            "endpoint_url": f"http://127.0.0.1:{_free_port()}",
            "access_key_id": "x",
            "secret_access_key": "y",
            "timeout_s": 2,
        },
    )
    with pytest.raises(Unreachable):
        driver.discover()


def test_vsphere_rename_behind_our_back_and_a_host_in_maintenance(tmp_path: Path) -> None:
    from pyVmomi import vim

    from dockyard.agent.clock import ManualClock
    from dockyard.agent.modules.vm import module_at
    from dockyard.agent.modules.vm.placement import create

    sim = Vcsim(host=2, vm=2).start()
    module = module_at(tmp_path / "vm", ManualClock(datetime(2026, 1, 1, tzinfo=UTC)))
    try:
        module.endpoints.add("vc", {"kind": "vsphere", **sim.config()})
        module.discover(module.clock())
        driver = module.driver("vc")
        first = module.store.vms("vc")[0].vm
        ref = vim.VirtualMachine(first.native_id, driver.si._stub)  # type: ignore[attr-defined]
        driver._wait(ref.Rename_Task(newName="renamed-by-someone"))  # type: ignore[attr-defined]
        module.discover(module.clock())
        again = [s.vm for s in module.store.vms("vc") if s.vm.native_id == first.native_id]
        assert [v.name for v in again] == ["renamed-by-someone"]
        assert len(module.store.vms("vc")) == len({s.vm.native_id for s in module.store.vms("vc")})

        busy_host = first.host
        host_ref = vim.HostSystem(busy_host, driver.si._stub)  # type: ignore[attr-defined]
        driver._wait(ref.PowerOffVM_Task())  # type: ignore[attr-defined]
        driver._wait(host_ref.EnterMaintenanceMode_Task(timeout=0))  # type: ignore[attr-defined]
        module.discover(module.clock())
        with pytest.raises(DriverError, match="maintenance mode") as refused:
            module.lifecycle.power(
                module.policy(), "vc", first.native_id, PowerAction.POWER_ON, module.clock()
            )
        assert refused.value.code == "host_in_maintenance"
        for turn in range(3):
            vm, host, _ = create(module, "vc", VmSpec(f"new-{turn}", memory_mb=32), module.clock())
            assert host.native_id != busy_host
            assert vm.host != busy_host
    finally:
        module.close()
        sim.stop()


def test_inventory_and_history_survive_a_restart(
    tmp_path: Path, kvm_hosts: dict[str, object]
) -> None:
    from dockyard.agent.clock import ManualClock
    from dockyard.agent.modules.vm import module_at

    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    module = module_at(tmp_path / "vm", clock)
    module.endpoints.add("lab", kvm_hosts)
    module.discover(clock())
    module.collect(clock())
    time.sleep(0.05)
    module.collect(clock())
    before = {s.vm.native_id: s.vm.name for s in module.store.vms()}
    module.close()
    reopened = module_at(tmp_path / "vm", clock)
    try:
        assert {s.vm.native_id: s.vm.name for s in reopened.store.vms()} == before
        web1 = reopened.store.find("web1")[0]
        from dockyard.agent.modules.vm.store import day_of

        day = day_of(clock())
        history = reopened.store.history("lab", web1.vm.native_id, day, day)
        assert history[day][Signal.CPU][1] == 1  # one rated sample kept across the restart
    finally:
        reopened.close()
