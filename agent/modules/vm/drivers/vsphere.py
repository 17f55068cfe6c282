"""vSphere (vCenter or a single ESXi host) through pyvmomi.

Discovery is one PropertyCollector read over a container view of VMs, hosts and datastores
(`RetrievePropertiesEx`, continued page by page), never a walk of managed objects one call at
a time: on a vCenter with thousands of VMs that is the difference between a second and an
hour. Samples come from the PerformanceManager's real-time counters for every VM in one
`QueryPerf`.

Idleness signals it reads: cpu (cpu.usage.average), disk (disk.usage.average), net
(net.usage.average), heartbeat (guestHeartbeatStatus). Application processes, sessions and
GPU use are not visible through the vSphere API without guest credentials: always unknown.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, ClassVar

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

# The SDK is dynamic (types are built from the server's type info at import), and its stubs
# cover too little to check against: it is Any at this boundary.
sdk: Any
connect: Any
try:
    import pyVmomi as sdk
    from pyVim import connect
except ImportError:  # pragma: no cover - depends on the install
    sdk = connect = None
vim: Any = getattr(sdk, "vim", None)
vmodl: Any = getattr(sdk, "vmodl", None)

VM_PROPERTIES = [
    "name",
    "runtime.powerState",
    "runtime.host",
    "datastore",
    "config.uuid",
    "config.instanceUuid",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "config.hardware.device",
    "config.annotation",
    "customValue",
    "guest.toolsRunningStatus",
]
HOST_PROPERTIES = [
    "name",
    "summary.hardware.numCpuThreads",
    "summary.hardware.memorySize",
    "runtime.inMaintenanceMode",
    "runtime.connectionState",
    "datastore",
]
DATASTORE_PROPERTIES = [
    "name",
    "summary.capacity",
    "summary.freeSpace",
    "summary.accessible",
    "host",
]
COUNTERS = {
    Signal.CPU: ("cpu.usage.average", 0.01),  # hundredths of a percent
    Signal.DISK: ("disk.usage.average", 1.0),  # KB/s
    Signal.NET: ("net.usage.average", 1.0),  # KB/s
}
REALTIME_INTERVAL_S = 20
POWER_STATES = {"poweredOn": "on", "poweredOff": "off", "suspended": "suspended"}
TASK_TIMEOUT_S = 300.0


def property_filter(view: Any, types_and_paths: Sequence[tuple[Any, list[str]]]) -> Any:
    """One filter over a container view: each type with its properties, the view skipped."""
    pc = vmodl.query.PropertyCollector
    return pc.FilterSpec(
        objectSet=[
            pc.ObjectSpec(
                obj=view,
                skip=True,
                selectSet=[
                    pc.TraversalSpec(
                        name="view", path="view", skip=False, type=vim.view.ContainerView
                    )
                ],
            )
        ],
        propSet=[pc.PropertySpec(type=t, pathSet=paths) for t, paths in types_and_paths],
    )


class VsphereDriver(Driver):
    kind: ClassVar[str] = "vsphere"
    signals: ClassVar[frozenset[Signal]] = frozenset(
        {Signal.CPU, Signal.DISK, Signal.NET, Signal.HEARTBEAT}
    )

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        super().__init__(name, config)
        if vim is None:
            raise DriverError("driver_missing", "install dockyard[vsphere] for vSphere endpoints")
        self._si: Any = None
        self._counters: dict[Signal, tuple[int, float]] | None = None

    # --- the connection ------------------------------------------------------------------

    @property
    def si(self) -> Any:
        if self._si is None:
            self._si = self._connect()
        return self._si

    def _connect(self) -> Any:
        host = str(self.config.get("host", ""))
        port = int(self.config.get("port", 443))
        verify = bool(self.config.get("verify_tls", True))
        kwargs: dict[str, Any] = {"disableSslCertValidation": not verify}
        if verify and self.config.get("ca_bundle"):
            kwargs = {"sslContext": ssl.create_default_context(cafile=self.config["ca_bundle"])}
        try:
            return connect.SmartConnect(
                host=host,
                port=port,
                user=str(self.config.get("user", "")),
                pwd=str(self.config.get("password", "")),
                connectionPoolTimeout=float(self.config.get("timeout_s", 30)),
                **kwargs,
            )
        except vim.fault.InvalidLogin as e:
            raise LoginFailed(
                f"{self.name}: vCenter {host} refused the user name or password"
            ) from e
        except (TimeoutError, OSError, ssl.SSLError) as e:
            raise Unreachable(f"{self.name}: cannot reach vCenter {host}:{port}: {e}") from e

    def close(self) -> None:
        if self._si is not None:
            with contextlib.suppress(Exception):  # a session already gone needs no logout
                connect.Disconnect(self._si)
            self._si = None

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one API call, turning the SDK's exceptions into errors a user can act on."""
        try:
            return fn(*args, **kwargs)
        except vmodl.fault.ManagedObjectNotFound as e:
            raise VmGone(str(getattr(e, "obj", "?"))) from e
        except vim.fault.NotAuthenticated as e:
            self._si = None
            raise LoginFailed(f"{self.name}: the vCenter session ended; log in again") from e
        except vim.fault.InvalidPowerState as e:
            raise DriverError("invalid_power_state", f"{self.name}: {e.msg}") from e
        except vim.fault.InvalidState as e:
            raise DriverError("invalid_state", f"{self.name}: {e.msg}") from e
        except vmodl.fault.MethodNotFound as e:
            raise DriverError("not_supported", f"{self.name}: the server lacks {e.method}") from e
        except (TimeoutError, OSError) as e:
            self._si = None
            raise Unreachable(f"{self.name}: lost the connection to vCenter: {e}") from e

    # --- discovery -----------------------------------------------------------------------

    def retrieve(self, types_and_paths: Sequence[tuple[Any, list[str]]]) -> Iterator[Any]:
        """Every object of the given types with the given properties, page by page."""
        content = self.si.content
        view = self._call(
            content.viewManager.CreateContainerView,
            content.rootFolder,
            [t for t, _ in types_and_paths],
            True,
        )
        pc = vmodl.query.PropertyCollector
        try:
            spec = property_filter(view, types_and_paths)
            collector = content.propertyCollector
            result = self._call(
                collector.RetrievePropertiesEx, [spec], pc.RetrieveOptions(maxObjects=1000)
            )
            while result is not None:
                yield from result.objects
                if not result.token:
                    break
                result = self._call(collector.ContinueRetrievePropertiesEx, result.token)
        finally:
            with contextlib.suppress(Exception):  # the view dies with the session anyway
                view.Destroy()

    def discover(self) -> Inventory:
        fields = {f.key: f.name for f in (self.si.content.customFieldsManager.field or ())}
        hosts, datastores, vms = [], [], []
        pending: list[tuple[Any, dict[str, Any]]] = []
        host_datastores: dict[str, list[Any]] = {}
        for obj in self.retrieve(
            [
                (vim.VirtualMachine, VM_PROPERTIES),
                (vim.HostSystem, HOST_PROPERTIES),
                (vim.Datastore, DATASTORE_PROPERTIES),
            ]
        ):
            props = {p.name: p.val for p in obj.propSet}
            if isinstance(obj.obj, vim.HostSystem):
                host_datastores[obj.obj._moId] = list(props.get("datastore") or ())
                hosts.append(
                    HostInfo(
                        native_id=obj.obj._moId,
                        name=props.get("name", obj.obj._moId),
                        cpus=int(props.get("summary.hardware.numCpuThreads") or 0),
                        memory_mb=int(props.get("summary.hardware.memorySize") or 0) >> 20,
                        maintenance=bool(props.get("runtime.inMaintenanceMode")),
                        connected=props.get("runtime.connectionState") == "connected",
                    )
                )
            elif isinstance(obj.obj, vim.Datastore):
                datastores.append(
                    DatastoreInfo(
                        native_id=obj.obj._moId,
                        name=props.get("name", obj.obj._moId),
                        capacity_bytes=int(props.get("summary.capacity") or 0),
                        free_bytes=int(props.get("summary.freeSpace") or 0),
                        hosts=tuple(m.key._moId for m in props.get("host") or ()),
                        accessible=bool(props.get("summary.accessible", True)),
                    )
                )
            else:
                pending.append((obj.obj, props))
        # A datastore's own `host` list is incomplete on some servers (vcsim lists one
        # host); each host's `datastore` list is reliable, so the two are merged.
        mounts: dict[str, set[str]] = {}
        for host_id, ds_refs in host_datastores.items():
            for ref in ds_refs:
                mounts.setdefault(ref._moId, set()).add(host_id)
        datastores = [
            replace(d, hosts=tuple(sorted(set(d.hosts) | mounts.get(d.native_id, set()))))
            for d in datastores
        ]
        names = {d.native_id: d.name for d in datastores}
        for ref, props in pending:
            vms.append(self._vm(ref, props, fields, names))
        return Inventory(self.name, tuple(hosts), tuple(datastores), tuple(vms))

    def _vm(
        self, ref: Any, props: dict[str, Any], fields: dict[int, str], ds_names: dict[str, str]
    ) -> VmInfo:
        devices = props.get("config.hardware.device") or ()
        macs = sorted(
            d.macAddress.lower()
            for d in devices
            if isinstance(d, vim.vm.device.VirtualEthernetCard) and d.macAddress
        )
        tags = {
            fields.get(v.key, str(v.key)): str(v.value)
            for v in props.get("customValue") or ()
            if hasattr(v, "value")
        }
        annotation = props.get("config.annotation") or ""
        if annotation:
            tags.setdefault("annotation", annotation)
        host = props.get("runtime.host")
        return VmInfo(
            native_id=ref._moId,
            name=props.get("name", ref._moId),
            power_state=POWER_STATES.get(str(props.get("runtime.powerState")), "off"),
            host=host._moId if host is not None else None,
            datastores=tuple(ds_names.get(d._moId, d._moId) for d in props.get("datastore") or ()),
            cpus=int(props.get("config.hardware.numCPU") or 0),
            memory_mb=int(props.get("config.hardware.memoryMB") or 0),
            identifiers=Identifiers(
                instance_uuid=props.get("config.instanceUuid") or None,
                bios_uuid=props.get("config.uuid") or None,
                macs=macs,
            ),
            tags=tags,
            tools_running=props.get("guest.toolsRunningStatus") == "guestToolsRunning",
        )

    # --- samples -------------------------------------------------------------------------

    def _counter_ids(self) -> dict[Signal, tuple[int, float]]:
        if self._counters is None:
            perf = self.si.content.perfManager
            by_name = {
                f"{c.groupInfo.key}.{c.nameInfo.key}.{c.rollupType}": c.key
                for c in perf.perfCounter
            }
            self._counters = {
                signal: (by_name[name], scale)
                for signal, (name, scale) in COUNTERS.items()
                if name in by_name
            }
        return self._counters

    def sample(self, vms: Sequence[VmInfo], now: datetime, window: timedelta) -> list[Sample]:
        on = [vm for vm in vms if vm.power_state == "on"]
        if not on:
            return []
        counters = self._counter_ids()
        metric_ids = [
            vim.PerformanceManager.MetricId(counterId=cid, instance="")
            for cid, _ in counters.values()
        ]
        start, end = now - min(window, timedelta(hours=1)), now
        specs = [
            vim.PerformanceManager.QuerySpec(
                entity=vim.VirtualMachine(vm.native_id, self.si._stub),
                metricId=metric_ids,
                intervalId=REALTIME_INTERVAL_S,
                startTime=start,
                endTime=end,
                maxSample=int((end - start).total_seconds() // REALTIME_INTERVAL_S) + 1,
            )
            for vm in on
        ]
        scale_by_id = {cid: (signal, scale) for signal, (cid, scale) in counters.items()}
        heartbeats = self._heartbeats(on)
        samples = []
        for result in self._call(self.si.content.perfManager.QueryPerf, specs) or ():
            values: dict[Signal, float] = {}
            for series in result.value or ():
                signal, scale = scale_by_id.get(series.id.counterId, (None, 1.0))
                points = [v for v in series.value or () if v >= 0]
                if signal is not None and points:
                    values[signal] = max(points) * scale
            native_id = result.entity._moId
            if native_id in heartbeats:
                values[Signal.HEARTBEAT] = heartbeats[native_id]
            samples.append(Sample(native_id, now, values))
        return samples

    def _heartbeats(self, vms: Sequence[VmInfo]) -> dict[str, float]:
        wanted = {vm.native_id for vm in vms}
        beats = {}
        for obj in self.retrieve([(vim.VirtualMachine, ["guestHeartbeatStatus"])]):
            if obj.obj._moId not in wanted:
                continue
            status = next((p.val for p in obj.propSet), "gray")
            if status in ("green", "yellow"):
                beats[obj.obj._moId] = 1.0
            elif status == "red":
                beats[obj.obj._moId] = 0.0
        return beats

    # --- power and creation --------------------------------------------------------------

    def _ref(self, vm: VmInfo) -> Any:
        ref = vim.VirtualMachine(vm.native_id, self.si._stub)
        try:
            self._call(lambda: ref.name)
        except VmGone:
            raise VmGone(vm.native_id) from None
        return ref

    def power(self, vm: VmInfo, action: PowerAction) -> str:
        ref = self._ref(vm)
        state = POWER_STATES.get(str(self._call(lambda: ref.runtime.powerState)), "off")
        if action == PowerAction.POWER_ON:
            if state != "on":
                if self._call(lambda: ref.runtime.host.runtime.inMaintenanceMode):
                    host = self._call(lambda: ref.runtime.host.name)
                    raise DriverError(
                        "host_in_maintenance",
                        f"{self.name}: {host} is in maintenance mode; not powering on",
                    )
                self._wait(self._call(ref.PowerOnVM_Task))
            return "on"
        if state == "off" or (state == "suspended" and action == PowerAction.SUSPEND):
            return state
        if action == PowerAction.SHUTDOWN:
            tools = self._call(lambda: ref.guest.toolsRunningStatus) == "guestToolsRunning"
            if tools:
                self._call(ref.ShutdownGuest)
                return self._await_state(ref, "off", "guest shutdown")
            self._wait(self._call(ref.PowerOffVM_Task))
        elif action == PowerAction.POWER_OFF:
            self._wait(self._call(ref.PowerOffVM_Task))
        elif action == PowerAction.SUSPEND:
            self._wait(self._call(ref.SuspendVM_Task))
            return "suspended"
        elif action == PowerAction.STANDBY:
            self._call(ref.StandbyGuest)
            return self._await_state(ref, "suspended", "guest standby")
        return "off"

    def _await_state(self, ref: Any, want: str, what: str) -> str:
        deadline = time.monotonic() + float(self.config.get("guest_timeout_s", 600))
        while time.monotonic() < deadline:
            state = POWER_STATES.get(str(self._call(lambda: ref.runtime.powerState)), "off")
            if state == want:
                return state
            time.sleep(1.0)
        raise DriverError("timeout", f"{self.name}: {what} of {ref._moId} did not finish")

    def _wait(self, task: Any) -> Any:
        """Poll only the task's state and error (vcsim chokes on reading a whole TaskInfo)."""
        deadline = time.monotonic() + TASK_TIMEOUT_S
        while time.monotonic() < deadline:
            state = self._call(lambda: task.info.state)
            if state == "success":
                return self._call(lambda: task.info.result)
            if state == "error":
                fault = self._call(lambda: task.info.error)
                message = getattr(fault, "msg", None) or str(fault)
                code = "host_in_maintenance" if "maintenance" in message.lower() else "task_failed"
                raise DriverError(code, f"{self.name}: {message}")
            time.sleep(0.05)
        raise DriverError("timeout", f"{self.name}: task {task._moId} did not finish in time")

    def create(self, spec: VmSpec, host: HostInfo, datastore: DatastoreInfo) -> VmInfo:
        if host.maintenance:
            raise DriverError("host_in_maintenance", f"{self.name}: {host.name} is in maintenance")
        host_ref = vim.HostSystem(host.native_id, self.si._stub)
        pool = self._call(lambda: host_ref.parent.resourcePool)
        parent = self._call(lambda: host_ref.parent)
        while not isinstance(parent, vim.Datacenter):
            parent = self._call(lambda p=parent: p.parent)
        folder = self._call(lambda: parent.vmFolder)
        devices: list[Any] = []
        controller_key = -100
        devices.append(
            vim.vm.device.VirtualDeviceSpec(
                operation="add",
                device=vim.vm.device.ParaVirtualSCSIController(
                    key=controller_key, busNumber=0, sharedBus="noSharing"
                ),
            )
        )
        for unit, disk in enumerate(spec.disks):
            devices.append(
                vim.vm.device.VirtualDeviceSpec(
                    operation="add",
                    fileOperation="create",
                    device=vim.vm.device.VirtualDisk(
                        key=-(101 + unit),
                        controllerKey=controller_key,
                        unitNumber=unit if unit < 7 else unit + 1,
                        capacityInKB=disk.size_gb * 1024 * 1024,
                        backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                            diskMode="persistent", thinProvisioned=disk.thin, fileName=""
                        ),
                    ),
                )
            )
        config = vim.vm.ConfigSpec(
            name=spec.name,
            numCPUs=spec.cpus,
            memoryMB=spec.memory_mb,
            guestId=spec.guest_id,
            annotation=spec.annotation,
            files=vim.vm.FileInfo(vmPathName=f"[{datastore.name}]"),
            deviceChange=devices,
        )
        ref = self._wait(self._call(folder.CreateVM_Task, config=config, pool=pool, host=host_ref))
        for key, value in spec.tags.items():
            self._set_tag(ref, key, value)
        for obj in self.retrieve([(vim.VirtualMachine, VM_PROPERTIES)]):
            if obj.obj._moId == ref._moId:
                fields = {f.key: f.name for f in self.si.content.customFieldsManager.field or ()}
                names = {datastore.native_id: datastore.name}
                return self._vm(obj.obj, {p.name: p.val for p in obj.propSet}, fields, names)
        raise VmGone(ref._moId)

    def _set_tag(self, ref: Any, key: str, value: str) -> None:
        manager = self.si.content.customFieldsManager
        field = next((f for f in manager.field or () if f.name == key), None)
        if field is None:
            field = self._call(manager.AddCustomFieldDef, name=key, moType=vim.VirtualMachine)
        self._call(manager.SetField, entity=ref, key=field.key, value=value)
