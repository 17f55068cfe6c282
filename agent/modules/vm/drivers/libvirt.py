"""KVM/QEMU through libvirt: an endpoint is a set of hosts, one libvirt connection each.

libvirt has no cluster of its own, so the endpoint lists its hosts (`hosts`: URIs such as
`qemu+ssh://kvm1/system`, or `test:///path/host1.xml` for libvirt's built-in test driver), and
a VM's native id is its libvirt UUID (stable across renames and hosts). A storage pool is a
datastore; a disk outside every pool is reported under its folder.

Idleness signals it reads: cpu (getCPUStats, as a share of the VM's vCPUs), disk (blockStats
over every disk), net (interfaceStats over every interface), each a rate between two
collections, so a VM's first collection after the agent starts has none. Heartbeat, sessions,
processes and GPU need the QEMU guest agent, which this driver does not drive: unknown.
libvirt has no maintenance mode; an operator marks a host with `"maintenance": true`.
Owner and tags come from `<metadata>` in our namespace, and `owner=...` lines of the
domain's `<description>`.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

from ....protocol.vm import Identifiers, PowerAction, Signal
from .base import (
    DatastoreInfo,
    Driver,
    DriverError,
    HostInfo,
    Inventory,
    LoginFailed,
    Sample,
    Unreachable,
    VmGone,
    VmInfo,
    VmSpec,
)

try:
    import libvirt as lv
except ImportError:  # pragma: no cover - depends on the install
    lv = None
else:
    # libvirt also prints each error on standard error ("libvirt: XML-RPC error : ...")
    # before raising it; the driver's DriverError is its one account.
    lv.registerErrorHandler(lambda _ctx, _err: None, None)

NAMESPACE = "https://dockyard.dev/xmlns/vm/1"
STATES = {1: "on", 2: "on", 3: "suspended", 4: "on", 5: "off", 6: "off", 7: "suspended"}
"""libvirt's domain states: running, blocked, paused, shutting down, shut off, crashed,
pmsuspended."""


@dataclass
class _Counters:
    at: float
    cpu_ns: int
    disk_bytes: int
    net_bytes: int


class LibvirtDriver(Driver):
    kind: ClassVar[str] = "libvirt"
    signals: ClassVar[frozenset[Signal]] = frozenset({Signal.CPU, Signal.DISK, Signal.NET})

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        super().__init__(name, config)
        if lv is None:
            raise DriverError("driver_missing", "install dockyard[libvirt] for libvirt endpoints")
        hosts = config.get("hosts") or []
        if not hosts:
            raise DriverError("bad_config", f"{name}: a libvirt endpoint lists its hosts")
        self.hosts: list[dict[str, Any]] = [
            h if isinstance(h, dict) else {"uri": str(h)} for h in hosts
        ]
        self._conns: dict[str, Any] = {}
        self._last: dict[str, _Counters] = {}
        self._lock = threading.Lock()

    # --- connections ---------------------------------------------------------------------

    def _conn(self, uri: str) -> Any:
        conn = self._conns.get(uri)
        if conn is not None and conn.isAlive():
            return conn
        try:
            conn = lv.open(uri)
        except lv.libvirtError as e:
            if e.get_error_code() in (lv.VIR_ERR_AUTH_FAILED, lv.VIR_ERR_AUTH_CANCELLED):
                raise LoginFailed(f"{self.name}: {uri} refused our credentials") from e
            raise Unreachable(f"{self.name}: cannot connect to {uri}: {e}") from e
        self._conns[uri] = conn
        return conn

    def close(self) -> None:
        for conn in self._conns.values():
            with contextlib.suppress(lv.libvirtError):
                conn.close()
        self._conns.clear()

    def _host_name(self, host: dict[str, Any]) -> str:
        return str(host.get("name") or host["uri"])

    # --- discovery -----------------------------------------------------------------------

    def discover(self) -> Inventory:
        hosts, datastores, vms = [], [], []
        for host in self.hosts:
            conn = self._conn(host["uri"])
            host_id = self._host_name(host)
            _model, memory_mb, cpus, *_ = conn.getInfo()
            hosts.append(
                HostInfo(
                    native_id=host_id,
                    name=host_id,
                    cpus=int(cpus),
                    memory_mb=int(memory_mb),
                    maintenance=bool(host.get("maintenance", False)),
                )
            )
            pools = []
            for pool in conn.listAllStoragePools():
                _state, capacity, _allocation, available = pool.info()
                target = _parse(pool.XMLDesc()).findtext("target/path") or ""
                pools.append((pool.name(), target))
                datastores.append(
                    DatastoreInfo(
                        native_id=f"{host_id}/{pool.name()}",
                        name=pool.name(),
                        capacity_bytes=int(capacity),
                        free_bytes=int(available),
                        hosts=(host_id,),
                        accessible=bool(pool.isActive()),
                    )
                )
            for dom in conn.listAllDomains():
                vms.append(self._vm(dom, host_id, pools))
        return Inventory(self.name, tuple(hosts), tuple(datastores), tuple(vms))

    def _vm(self, dom: Any, host_id: str, pools: list[tuple[str, str]]) -> VmInfo:
        xml = _parse(dom.XMLDesc())
        disks = []
        for source in xml.iterfind("devices/disk[@device='disk']/source"):
            path = source.get("file") or source.get("dev") or source.get("volume") or ""
            pool = source.get("pool") or next(
                (name for name, target in pools if target and path.startswith(target + "/")),
                os.path.dirname(path),
            )
            if pool and pool not in disks:
                disks.append(pool)
        macs = sorted(
            (m.get("address") or "").lower() for m in xml.iterfind("devices/interface/mac")
        )
        tags = {
            t.get("name", ""): t.text or ""
            for t in xml.iterfind(f"metadata/{{{NAMESPACE}}}tags/{{{NAMESPACE}}}tag")
        }
        description = xml.findtext("description") or ""
        for line in description.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() and key.strip() not in tags:
                tags[key.strip()] = value.strip()
        if description:
            tags.setdefault("annotation", description)
        memory_kib = int(xml.findtext("memory") or 0)
        state = STATES.get(dom.state()[0], "off")
        return VmInfo(
            native_id=dom.UUIDString(),
            name=dom.name(),
            power_state=state,
            host=host_id,
            datastores=tuple(disks),
            cpus=int(xml.findtext("vcpu") or 1),
            memory_mb=memory_kib // 1024,
            identifiers=Identifiers(
                bios_uuid=xml.findtext("sysinfo/system/entry[@name='uuid']") or dom.UUIDString(),
                macs=[m for m in macs if m],
            ),
            tags=tags,
            tools_running=False,
        )

    def _find(self, vm: VmInfo) -> tuple[Any, dict[str, Any]]:
        """The domain by UUID, on the host that has it now (it may have migrated)."""
        order = sorted(self.hosts, key=lambda h: self._host_name(h) != vm.host)
        for host in order:
            try:
                return self._conn(host["uri"]).lookupByUUIDString(vm.native_id), host
            except lv.libvirtError as e:
                if e.get_error_code() != lv.VIR_ERR_NO_DOMAIN:
                    raise DriverError("libvirt_error", f"{self.name}: {e}") from e
        raise VmGone(vm.native_id)

    # --- samples -------------------------------------------------------------------------

    def sample(self, vms: Sequence[VmInfo], now: datetime, window: timedelta) -> list[Sample]:
        samples = []
        for vm in vms:
            if vm.power_state != "on":
                continue
            try:
                dom, _host = self._find(vm)
                counters = self._read(dom)
            except (VmGone, lv.libvirtError):
                continue
            with self._lock:
                last = self._last.get(vm.native_id)
                self._last[vm.native_id] = counters
            if last is None or counters.at <= last.at:
                continue
            seconds = counters.at - last.at
            values = {
                Signal.CPU: max(0.0, counters.cpu_ns - last.cpu_ns)
                / (seconds * 1e9 * max(vm.cpus, 1))
                * 100.0,
                Signal.DISK: max(0, counters.disk_bytes - last.disk_bytes) / 1024 / seconds,
                Signal.NET: max(0, counters.net_bytes - last.net_bytes) / 1024 / seconds,
            }
            samples.append(Sample(vm.native_id, now, values))
        return samples

    def _read(self, dom: Any) -> _Counters:
        xml = _parse(dom.XMLDesc())
        cpu = int(dom.getCPUStats(True)[0].get("cpu_time", 0))
        disk = 0
        for target in xml.iterfind("devices/disk[@device='disk']/target"):
            _rd_req, rd_bytes, _wr_req, wr_bytes, _errs = dom.blockStats(target.get("dev"))
            disk += int(rd_bytes) + int(wr_bytes)
        net = 0
        for iface in xml.iterfind("devices/interface"):
            device = iface.find("target")
            mac = iface.find("mac")
            key = device.get("dev") if device is not None else None
            key = key or (mac.get("address") if mac is not None else None)
            if key:
                stats = dom.interfaceStats(key)
                net += int(stats[0]) + int(stats[4])
        return _Counters(time.monotonic(), cpu, disk, net)

    # --- power and creation --------------------------------------------------------------

    def power(self, vm: VmInfo, action: PowerAction) -> str:
        dom, host = self._find(vm)
        state = STATES.get(dom.state()[0], "off")
        try:
            if action == PowerAction.POWER_ON:
                if state == "suspended" and dom.state()[0] == 3:
                    dom.resume()
                elif state != "on":
                    if host.get("maintenance"):
                        raise DriverError(
                            "host_in_maintenance",
                            f"{self.name}: {self._host_name(host)} is in maintenance",
                        )
                    dom.create()
                return "on"
            if state != "on":
                return state
            if action == PowerAction.SHUTDOWN:
                dom.shutdown()
                return self._await_off(dom)
            if action == PowerAction.POWER_OFF:
                dom.destroy()
            elif action == PowerAction.SUSPEND:
                dom.managedSave()
                return "suspended"
            elif action == PowerAction.STANDBY:
                dom.suspend()
                return "suspended"
        except lv.libvirtError as e:
            if e.get_error_code() == lv.VIR_ERR_NO_DOMAIN:
                raise VmGone(vm.native_id) from e
            raise DriverError("libvirt_error", f"{self.name}: {e}") from e
        return "off"

    def _await_off(self, dom: Any) -> str:
        deadline = time.monotonic() + float(self.config.get("guest_timeout_s", 600))
        while time.monotonic() < deadline:
            if STATES.get(dom.state()[0], "off") == "off":
                return "off"
            time.sleep(1.0)
        raise DriverError("timeout", f"{self.name}: {dom.name()} ignored the shutdown request")

    def create(self, spec: VmSpec, host: HostInfo, datastore: DatastoreInfo) -> VmInfo:
        entry = next((h for h in self.hosts if self._host_name(h) == host.native_id), None)
        if entry is None:
            raise DriverError("bad_placement", f"{self.name}: no host {host.native_id}")
        if host.maintenance:
            raise DriverError("host_in_maintenance", f"{self.name}: {host.name} is in maintenance")
        conn = self._conn(entry["uri"])
        try:
            pool = conn.storagePoolLookupByName(datastore.name)
            target = _parse(pool.XMLDesc()).findtext("target/path") or ""
            disks = []
            for index, disk in enumerate(spec.disks):
                volume = f"{spec.name}-{index}.qcow2"
                pool.createXML(
                    f"<volume><name>{_xml(volume)}</name>"
                    f"<capacity unit='GiB'>{disk.size_gb}</capacity>"
                    f"<allocation unit='GiB'>{0 if disk.thin else disk.size_gb}</allocation>"
                    "<target><format type='qcow2'/></target></volume>"
                )
                dev = "vd" + chr(ord("a") + index)
                disks.append(
                    f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
                    f"<source file='{_xml(target)}/{_xml(volume)}'/>"
                    f"<target dev='{dev}' bus='virtio'/></disk>"
                )
            tags = "".join(f"<tag name='{_xml(k)}'>{_xml(v)}</tag>" for k, v in spec.tags.items())
            dom = conn.defineXML(
                f"<domain type='{_domain_type(entry['uri'])}'>"
                f"<name>{_xml(spec.name)}</name><uuid>{uuidlib.uuid4()}</uuid>"
                f"<description>{_xml(spec.annotation)}</description>"
                f"<metadata><dockyard:tags xmlns:dockyard='{NAMESPACE}'>"
                f"{tags.replace('<tag', '<dockyard:tag').replace('</tag>', '</dockyard:tag>')}"
                "</dockyard:tags></metadata>"
                f"<memory unit='MiB'>{spec.memory_mb}</memory><vcpu>{spec.cpus}</vcpu>"
                "<os><type>hvm</type></os>"
                f"<devices>{''.join(disks)}</devices></domain>"
            )
            pools = [
                (p.name(), _parse(p.XMLDesc()).findtext("target/path") or "")
                for p in conn.listAllStoragePools()
            ]
            return self._vm(dom, host.native_id, pools)
        except lv.libvirtError as e:
            raise DriverError("create_failed", f"{self.name}: {e}") from e


def _parse(xml: str) -> ET.Element:
    """XML from the libvirt daemon we connected to (never from a user)."""
    return ET.fromstring(xml)  # noqa: S314 - libvirt's own descriptions


def _domain_type(uri: str) -> str:
    return "test" if uri.startswith("test:") else "kvm"


def _xml(text: str) -> str:
    return escape(text, {"'": "&apos;", '"': "&quot;"})
