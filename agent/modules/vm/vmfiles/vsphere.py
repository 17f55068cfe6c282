"""vSphere: a VM's files through the datastore file service, fenced as a template.

Files are the VM's `layoutEx.file` list, streamed with HTTP GET and PUT on `/folder`
(`datastore.py`) under the SOAP session's cookie, and removed with the FileManager. A file
another VM's layout also names (a linked clone's base disk, a shared disk) is the VM's
neighbour's too: it is kept in place and never archived or removed.

The fence is `MarkAsTemplate`: vCenter, ESXi and vcsim all refuse to power on a template
("cannot powerOn a template"), and it needs no privilege beyond what the archive itself
needs. vSphere's own `DisableMethods` is an internal API that vcsim lacks and that a
vCenter may refuse to a plain user. The VM stays registered throughout; the custom
attribute `dockyard.archived` says it is archived, so a person looking at vCenter sees why
the template has no disks. A restore writes the files back and marks it a VM again on the
host and resource pool it was on.
"""

from __future__ import annotations

import contextlib
import io
import posixpath
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from typing import Any, BinaryIO

import httpx

from ....protocol.vm import FileRole
from ..datastore import DatastoreFiles, DatastorePath
from ..drivers.base import DriverError, VmInfo
from ..drivers.vsphere import TASK_TIMEOUT_S, VsphereDriver, vim, vmodl
from ..stub import STUB_NAME
from .base import ExternalFile, VmFile, VmFiles

ATTRIBUTE = "dockyard.archived"
ROLES = {
    "config": FileRole.CONFIG,
    "extendedConfig": FileRole.CONFIG,
    "diskDescriptor": FileRole.DISK,
    "diskExtent": FileRole.DISK,
    "digestDescriptor": FileRole.DISK,
    "digestExtent": FileRole.DISK,
    "nvram": FileRole.NVRAM,
    "snapshotData": FileRole.SNAPSHOT,
    "snapshotMemory": FileRole.SNAPSHOT,
    "snapshotList": FileRole.SNAPSHOT,
    "snapshotManifestList": FileRole.SNAPSHOT,
    "suspend": FileRole.SNAPSHOT,
    "suspendMemory": FileRole.SNAPSHOT,
    "log": FileRole.LOG,
    "stat": FileRole.OTHER,
    "core": FileRole.OTHER,
    "screenshot": FileRole.OTHER,
    "swap": FileRole.OTHER,
    "uwswap": FileRole.OTHER,
}


class VsphereFiles(VmFiles):
    hypervisor = "vsphere"

    def __init__(self, driver: VsphereDriver) -> None:
        self.driver = driver
        host = str(driver.config.get("host", ""))
        port = int(driver.config.get("port", 443))
        self._base = f"https://{host}:{port}"
        self._verify = bool(driver.config.get("verify_tls", True))
        self._ds: DatastoreFiles | None = None
        self._dc: dict[str, str] = {}
        self._dc_of_ds: dict[str, str] = {}

    @property
    def ds(self) -> DatastoreFiles:
        if self._ds is None:
            self._ds = DatastoreFiles(self.driver.si, self._base, verify=self._verify)
        return self._ds

    def close(self) -> None:
        if self._ds is not None:
            self._ds.close()
            self._ds = None

    # --- where things are ------------------------------------------------------------

    def _ref(self, vm: VmInfo) -> Any:
        return self.driver._ref(vm)

    def _datacenter(self, ref: Any) -> str:
        if ref._moId not in self._dc:
            node = self.driver._call(lambda: ref.parent)
            while node is not None and not isinstance(node, vim.Datacenter):
                node = self.driver._call(lambda n=node: n.parent)
            if node is None:
                raise DriverError("vm_not_found", f"{ref._moId} is in no datacenter")
            self._dc[ref._moId] = str(self.driver._call(lambda: node.name))
        return self._dc[ref._moId]

    def _folder(self, ref: Any) -> DatastorePath:
        vmx = DatastorePath.parse(str(self.driver._call(lambda: ref.config.files.vmPathName)))
        return DatastorePath(vmx.datastore, posixpath.dirname(vmx.path))

    def _layout(self, ref: Any) -> list[tuple[str, str]]:
        """The VM's files; of its disk files only those a disk's chain names now (after
        a disk moved, vcsim keeps the old paths in the file list too)."""
        layout = self.driver._call(lambda: ref.layoutEx)
        chained = {key for disk in layout.disk or () for link in disk.chain for key in link.fileKey}
        return [
            (str(f.name), str(f.type))
            for f in layout.file or ()
            if not chained or not str(f.type).startswith("disk") or f.key in chained
        ]

    # --- the files -------------------------------------------------------------------

    def files(self, vm: VmInfo) -> tuple[list[VmFile], list[ExternalFile]]:
        ref = self._ref(vm)
        dc = self._datacenter(ref)
        folder = self._folder(ref)
        others = self._neighbours_files(ref)
        own: list[VmFile] = []
        external: list[ExternalFile] = []
        seen: set[str] = set()
        vmx = str(self.driver._call(lambda: ref.config.files.vmPathName))
        places: list[DatastorePath] = []  # read once, on the first file named without one
        for name, kind in [(vmx, "config"), *self._layout(ref)]:
            where = DatastorePath.parse(name)
            stat = self._stat(where, dc)
            if stat is None and "/" not in where.path:
                # vcsim names some of a VM's files without their folder: they are in it,
                # or (a disk restored to another datastore) beside the disk's descriptor.
                bare = where.path
                places = places or [folder, *self._disk_folders(ref)]
                for place in places:
                    where = DatastorePath(place.datastore, f"{place.path}/{bare}")
                    stat = self._stat(where, dc)
                    if stat is not None:
                        break
                else:
                    where = DatastorePath(folder.datastore, f"{folder.path}/{bare}")
                name = str(where)
            if name in seen:
                continue
            seen.add(name)
            inside = where.datastore == folder.datastore and where.path.startswith(
                folder.path + "/"
            )
            if stat is None:
                if inside:
                    raise DriverError("file_not_found", f"{name} is in the VM's layout but gone")
                continue
            if name in others:
                external.append(ExternalFile(name, stat[0], f"also used by {others[name]}"))
                continue
            relative = (
                where.path[len(folder.path) + 1 :]
                if inside
                else f"external/{where.datastore}/{where.path}"
            )
            if relative == STUB_NAME:
                continue
            own.append(VmFile(relative, name, ROLES.get(kind, FileRole.OTHER), *stat))
        return own, external

    def _disk_folders(self, ref: Any) -> list[DatastorePath]:
        out = []
        for device in self.driver._call(lambda: ref.config.hardware.device) or ():
            if isinstance(device, vim.vm.device.VirtualDisk):
                disk = DatastorePath.parse(str(device.backing.fileName))
                place = DatastorePath(disk.datastore, posixpath.dirname(disk.path))
                if place not in out:
                    out.append(place)
        return out

    def _neighbours_files(self, ref: Any) -> dict[str, str]:
        """Every file another VM's layout names, with that VM's name."""
        out: dict[str, str] = {}
        for obj in self.driver.retrieve([(vim.VirtualMachine, ["name", "layoutEx.file"])]):
            if obj.obj._moId == ref._moId:
                continue
            props = {p.name: p.val for p in obj.propSet}
            for f in props.get("layoutEx.file") or ():
                out.setdefault(str(f.name), str(props.get("name", obj.obj._moId)))
        return out

    def _stat(self, where: DatastorePath, dc: str) -> tuple[int, str | None] | None:
        url, params = self.ds._url(where, dc)
        try:
            response = self.ds._client.head(url, params=params)
        except httpx.TransportError as e:
            raise DriverError("endpoint_unreachable", f"reading {where}: {e}") from e
        if response.status_code == 404:
            return None
        self.ds._raise_for(response, where, "read")
        modified = response.headers.get("last-modified")
        mark = parsedate_to_datetime(modified).isoformat() if modified else None
        return int(response.headers.get("content-length", "0")), mark

    def stat(self, f: VmFile) -> tuple[int, str | None] | None:
        return self._stat(DatastorePath.parse(f.source), self._dc_for(f))

    def _dc_for(self, f: VmFile) -> str:
        """The datacenter of the file's datastore (journalled files carry only the
        datastore's name, so a resumed job finds it again)."""
        name = DatastorePath.parse(f.source).datastore
        if name not in self._dc_of_ds:
            for dc in self.driver.si.content.rootFolder.childEntity:
                if isinstance(dc, vim.Datacenter):
                    for ds in dc.datastore or ():
                        self._dc_of_ds.setdefault(str(ds.name), str(dc.name))
        if name not in self._dc_of_ds:
            raise DriverError("file_not_found", f"datastore {name} is in no datacenter")
        return self._dc_of_ds[name]

    @contextmanager
    def reader(self, f: VmFile) -> Iterator[BinaryIO]:
        with self.ds.reader(DatastorePath.parse(f.source), self._dc_for(f)) as stream:
            yield stream

    def write(self, f: VmFile, produce: Callable[[BinaryIO], None]) -> None:
        self.ds.write_from(DatastorePath.parse(f.source), self._dc_for(f), f.size, produce)

    def delete(self, f: VmFile) -> None:
        self._delete(DatastorePath.parse(f.source), self._dc_for(f))

    def _delete(self, where: DatastorePath, dc: str) -> None:
        content = self.driver.si.content
        datacenter = self._datacenter_ref(dc)
        try:
            task = self.driver._call(
                content.fileManager.DeleteDatastoreFile_Task, str(where), datacenter
            )
            self._wait(task)
        except DriverError as e:
            if "not found" in str(e).lower() or "was not found" in str(e).lower():
                return
            raise
        except vim.fault.FileNotFound:
            return

    def _wait(self, task: Any) -> None:
        """A FileManager task, read through the property collector one field at a time:
        vcsim names the FileManager as the task's entity, which pyVmomi cannot read back
        as a whole TaskInfo."""
        pc = vmodl.query.PropertyCollector
        spec = pc.FilterSpec(
            objectSet=[pc.ObjectSpec(obj=task, skip=False)],
            propSet=[pc.PropertySpec(type=vim.Task, pathSet=["info.state", "info.error"])],
        )
        collector = self.driver.si.content.propertyCollector
        deadline = time.monotonic() + TASK_TIMEOUT_S
        while time.monotonic() < deadline:
            result = self.driver._call(collector.RetrievePropertiesEx, [spec], pc.RetrieveOptions())
            props = {p.name: p.val for o in result.objects for p in o.propSet}
            if props.get("info.state") == "success":
                return
            if props.get("info.state") == "error":
                fault = props.get("info.error")
                raise DriverError("task_failed", getattr(fault, "msg", None) or str(fault))
            time.sleep(0.05)
        raise DriverError("timeout", f"task {task._moId} did not finish in time")

    def _datacenter_ref(self, name: str) -> Any:
        for dc in self.driver.si.content.rootFolder.childEntity:
            if isinstance(dc, vim.Datacenter) and dc.name == name:
                return dc
        raise DriverError("vm_not_found", f"datacenter {name} is gone")

    # --- the stub ----------------------------------------------------------------------

    def _stub_path(self, vm: VmInfo) -> tuple[DatastorePath, str]:
        ref = self._ref(vm)
        folder = self._folder(ref)
        return DatastorePath(folder.datastore, f"{folder.path}/{STUB_NAME}"), self._datacenter(ref)

    def read_stub(self, vm: VmInfo) -> bytes | None:
        where, dc = self._stub_path(vm)
        try:
            with self.ds.reader(where, dc) as stream:
                return stream.read(1 << 20)
        except DriverError as e:
            if e.code == "file_not_found":
                return None
            raise

    def write_stub(self, vm: VmInfo, raw: bytes) -> None:
        where, dc = self._stub_path(vm)
        self.ds.write(where, dc, io.BytesIO(raw), len(raw))

    def remove_stub(self, vm: VmInfo) -> None:
        where, dc = self._stub_path(vm)
        self._delete(where, dc)

    # --- the VM ------------------------------------------------------------------------

    def fenced(self, vm: VmInfo) -> bool:
        ref = self._ref(vm)
        return bool(self.driver._call(lambda: ref.config.template))

    def fence(self, vm: VmInfo) -> dict[str, str]:
        ref = self._ref(vm)
        host = self.driver._call(lambda: ref.runtime.host)
        pool = self.driver._call(lambda: ref.resourcePool)
        placement = {
            "host": host._moId if host is not None else "",
            "pool": pool._moId if pool is not None else "",
        }
        if self.fenced(vm):
            return placement
        if self.power_state(vm) != "off":
            raise DriverError("invalid_power_state", f"{vm.name} is not off; not archived")
        self.driver._call(ref.MarkAsTemplate)
        return placement

    def unfence(self, vm: VmInfo, placement: dict[str, str] | None = None) -> None:
        ref = self._ref(vm)
        if not self.fenced(vm):
            return
        stub = self.driver.si._stub
        host = (
            vim.HostSystem(placement["host"], stub) if placement and placement.get("host") else None
        )
        pool = (
            vim.ResourcePool(placement["pool"], stub)
            if placement and placement.get("pool")
            else self._any_pool(host)
        )
        self.driver._call(ref.MarkAsVirtualMachine, pool=pool, host=host)

    def _any_pool(self, host: Any) -> Any:
        content = self.driver.si.content
        if host is None:
            view = content.viewManager.CreateContainerView(
                content.rootFolder, [vim.HostSystem], True
            )
            try:
                host = view.view[0]
            finally:
                with contextlib.suppress(Exception):
                    view.Destroy()
        return host.parent.resourcePool

    def power_state(self, vm: VmInfo) -> str:
        ref = self._ref(vm)
        state = str(self.driver._call(lambda: ref.runtime.powerState))
        return {"poweredOn": "on", "suspended": "suspended"}.get(state, "off")

    def power_on(self, vm: VmInfo) -> None:
        from ....protocol.vm import PowerAction

        self.driver.power(vm, PowerAction.POWER_ON)

    def heartbeat(self, vm: VmInfo) -> bool | None:
        ref = self._ref(vm)
        status = str(self.driver._call(lambda: ref.guestHeartbeatStatus))
        return status in ("green", "yellow")

    def hardware(self, vm: VmInfo) -> dict[str, Any]:
        ref = self._ref(vm)
        config = self.driver._call(lambda: ref.config)
        devices = config.hardware.device or ()
        fields = {f.key: f.name for f in (self.driver.si.content.customFieldsManager.field or ())}
        attributes = {
            fields.get(v.key, str(v.key)): str(v.value)
            for v in (self.driver._call(lambda: ref.customValue) or ())
            if hasattr(v, "value") and fields.get(v.key) != ATTRIBUTE
        }
        return {
            "cpus": int(config.hardware.numCPU),
            "memory_mb": int(config.hardware.memoryMB),
            "guest_id": str(config.guestId),
            "macs": sorted(
                d.macAddress.lower()
                for d in devices
                if isinstance(d, vim.vm.device.VirtualEthernetCard) and d.macAddress
            ),
            "disks": sorted(
                (str(d.backing.fileName), int(d.capacityInKB))
                for d in devices
                if isinstance(d, vim.vm.device.VirtualDisk)
            ),
            "annotation": str(config.annotation or ""),
            "attributes": attributes,
            "datastores": sorted(
                str(d.name) for d in (self.driver._call(lambda: ref.datastore) or ())
            ),
            "uuid": str(config.uuid),
        }

    def mark(self, vm: VmInfo, text: str | None) -> None:
        ref = self._ref(vm)
        manager = self.driver.si.content.customFieldsManager
        key = next((f.key for f in (manager.field or ()) if f.name == ATTRIBUTE), None)
        if key is None:
            key = self.driver._call(
                manager.AddCustomFieldDef, name=ATTRIBUTE, moType=vim.VirtualMachine
            ).key
        self.driver._call(manager.SetField, entity=ref, key=key, value=text or "")

    # --- another datastore ------------------------------------------------------------

    def places(self, vm: VmInfo) -> dict[str, int]:
        """The datastores the VM's host mounts and can reach, with their free bytes."""
        ref = self._ref(vm)
        host = self.driver._call(lambda: ref.runtime.host)
        mounted = (
            {ds._moId for ds in (self.driver._call(lambda: host.datastore) or ())}
            if host is not None
            else None
        )
        out = {}
        for ds in self.driver.retrieve(
            [(vim.Datastore, ["name", "summary.freeSpace", "summary.accessible"])]
        ):
            props = {p.name: p.val for p in ds.propSet}
            if props.get("summary.accessible") is False:
                continue
            if mounted is not None and ds.obj._moId not in mounted:
                continue
            out[str(props.get("name"))] = int(props.get("summary.freeSpace") or 0)
        return out

    def relocate(self, f: VmFile, place: str) -> VmFile:
        where = DatastorePath.parse(f.source)
        return VmFile(f.name, str(DatastorePath(place, where.path)), f.role, f.size, f.modified)

    def prepare(self, f: VmFile) -> None:
        where = DatastorePath.parse(f.source)
        folder = DatastorePath(where.datastore, posixpath.dirname(where.path))
        manager = self.driver.si.content.fileManager
        with contextlib.suppress(vim.fault.FileAlreadyExists):
            self.driver._call(
                manager.MakeDirectory,
                name=str(folder),
                datacenter=self._datacenter_ref(self._dc_for(f)),
                createParentDirectories=True,
            )

    def repoint(
        self, vm: VmInfo, moved: dict[str, str], halfway: Callable[[], None] | None = None
    ) -> None:
        """Each virtual disk whose descriptor moved gets its new path (one ReconfigVM, so
        no step between for `halfway`), the VM staying registered where its
        configuration is."""
        ref = self._ref(vm)
        changes = []
        for device in self.driver._call(lambda: ref.config.hardware.device) or ():
            if not isinstance(device, vim.vm.device.VirtualDisk):
                continue
            new = moved.get(str(device.backing.fileName))
            if new is None or new == str(device.backing.fileName):
                continue
            device.backing.fileName = new
            device.backing.datastore = self._datastore_ref(DatastorePath.parse(new).datastore)
            changes.append(
                vim.vm.device.VirtualDeviceSpec(
                    operation=vim.vm.device.VirtualDeviceSpec.Operation.edit, device=device
                )
            )
        if changes:
            task = self.driver._call(
                ref.ReconfigVM_Task, spec=vim.vm.ConfigSpec(deviceChange=changes)
            )
            self.driver._wait(task)

    def _datastore_ref(self, name: str) -> Any:
        for ds in self.driver.retrieve([(vim.Datastore, ["name"])]):
            if any(p.val == name for p in ds.propSet):
                return ds.obj
        raise DriverError("datastore_not_found", f"datastore {name} is gone")

    def free_bytes(self, f: VmFile) -> int | None:
        where = DatastorePath.parse(f.source)
        for ds in self.driver.retrieve([(vim.Datastore, ["name", "summary.freeSpace"])]):
            props = {p.name: p.val for p in ds.propSet}
            if props.get("name") == where.datastore:
                return int(props.get("summary.freeSpace") or 0)
        return None
