"""Where a new VM goes: a host by the policy's rule, then the datastore with most free space
among those that host mounts. Hosts in maintenance or disconnected are never chosen; a
request no host can hold is refused with the reason, before anything is created.

"Allocated" counts the vCPUs and memory of the powered-on VMs a host runs, as discovered.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ...protocol.vm import HostChoice, VmLifecyclePolicy
from .drivers.base import DatastoreInfo, DiskSpec, DriverError, HostInfo, VmInfo, VmSpec

if TYPE_CHECKING:
    from . import VmModule


class NoPlacement(DriverError):
    def __init__(self, message: str) -> None:
        super().__init__("no_placement", message)


def spec_from(args: dict[str, Any]) -> VmSpec:
    name = str(args.get("name", "")).strip()
    if not name or len(name) > 80:
        raise ValueError("name is 1 to 80 characters")
    cpus = int(args.get("cpus", 1))
    memory_mb = int(args.get("memory_mb", 1024))
    disks = tuple(DiskSpec(int(size)) for size in args.get("disks_gb", [8]))
    if not 1 <= cpus <= 256 or not 16 <= memory_mb <= 4 << 20:
        raise ValueError("cpus is 1..256 and memory_mb 16..4194304")
    if not disks or any(d.size_gb < 1 for d in disks) or len(disks) > 15:
        raise ValueError("disks_gb lists 1 to 15 sizes of at least 1 GB")
    tags = {str(k): str(v) for k, v in dict(args.get("tags", {})).items()}
    return VmSpec(
        name=name,
        cpus=cpus,
        memory_mb=memory_mb,
        disks=disks,
        annotation=str(args.get("annotation", "")),
        tags=tags,
    )


def allocation(hosts: Sequence[HostInfo], vms: Sequence[VmInfo]) -> dict[str, tuple[int, int]]:
    used = {h.native_id: (0, 0) for h in hosts}
    for vm in vms:
        if vm.power_state == "on" and vm.host in used:
            cpus, memory = used[vm.host]
            used[vm.host] = (cpus + vm.cpus, memory + vm.memory_mb)
    return used


def choose_host(
    rule: HostChoice,
    hosts: Sequence[HostInfo],
    vms: Sequence[VmInfo],
    spec: VmSpec,
    turn: int = 0,
) -> HostInfo:
    usable = [h for h in hosts if h.connected and not h.maintenance]
    if not usable:
        states = ", ".join(
            f"{h.name} ({'maintenance' if h.maintenance else 'disconnected'})" for h in hosts
        )
        raise NoPlacement(f"no host can take a VM: {states or 'none discovered'}")
    used = allocation(hosts, vms)
    fits = [h for h in usable if used[h.native_id][1] + spec.memory_mb <= h.memory_mb]
    if not fits:
        raise NoPlacement(
            f"no host has {spec.memory_mb} MB of memory unallocated; most free: "
            + ", ".join(f"{h.name} {h.memory_mb - used[h.native_id][1]} MB" for h in usable)
        )
    if rule == HostChoice.ROUND_ROBIN:
        ordered = sorted(fits, key=lambda h: h.name)
        return ordered[turn % len(ordered)]
    if rule == HostChoice.LEAST_ALLOCATED_ABSOLUTE:
        return max(
            fits,
            key=lambda h: (
                h.memory_mb - used[h.native_id][1],
                h.cpus - used[h.native_id][0],
                h.name,
            ),
        )

    def share(h: HostInfo) -> tuple[float, str]:
        cpus, memory = used[h.native_id]
        return max(cpus / max(h.cpus, 1), memory / max(h.memory_mb, 1)), h.name

    return min(fits, key=share)


def choose_datastore(
    host: HostInfo, datastores: Sequence[DatastoreInfo], spec: VmSpec
) -> DatastoreInfo:
    needed = sum(d.size_gb for d in spec.disks if not d.thin) << 30
    mounted = [d for d in datastores if d.accessible and (not d.hosts or host.native_id in d.hosts)]
    roomy = [d for d in mounted if d.free_bytes >= needed]
    if not roomy:
        raise NoPlacement(f"no datastore on {host.name} has {needed >> 30} GB free")
    return max(roomy, key=lambda d: (d.free_bytes, d.name))


def create(
    module: VmModule, endpoint: str, spec: VmSpec, now: datetime
) -> tuple[VmInfo, HostInfo, DatastoreInfo]:
    """Discovers afresh (allocation changes), chooses, creates, and records the new VM."""
    policy: VmLifecyclePolicy = module.policy()
    driver = module.driver(endpoint)
    inventory = driver.discover()
    module.store.record_inventory(inventory, now)
    if any(vm.name == spec.name for vm in inventory.vms):
        raise DriverError("name_taken", f"{endpoint} already has a VM named {spec.name}")
    turn = int(module.store.mark(f"round_robin:{endpoint}") or 0)
    host = choose_host(policy.placement.host, inventory.hosts, inventory.vms, spec, turn)
    datastore = choose_datastore(host, inventory.datastores, spec)
    vm = driver.create(spec, host, datastore)
    module.store.set_mark(f"round_robin:{endpoint}", str(turn + 1))
    module.store.record_inventory(driver.discover(), now)
    return vm, host, datastore
