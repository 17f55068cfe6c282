"""KVM/QEMU through libvirt: a domain's files on the host's own disk, fenced by metadata.

What is archived: the domain's definition (its inactive XML, as `domain.xml`), each file
disk's top image, and its NVRAM. A qcow2 backing file (read from `qemu-img info
--backing-chain`, or the XML's `backingStore`), a disk another domain also names, and every
CD-ROM are used by others or by no one's VM alone: they stay in place, recorded in the
manifest so a restore can say when one is gone. The domain stays defined; once its disks
are gone it has nothing it can boot from.

The fence: autostart off, and a `dockyard:archive` metadata element on the domain that the
module's own power path honours (libvirt itself has no way to refuse `virsh start` to
someone with access to the daemon; say so to users: the fence keeps Dockyard and autostart
from starting it, and the missing disks keep anything else from booting it).

The files are the host's, so this works where the agent runs on the hypervisor host (the
`qemu:///system` and `qemu:///session` URIs, and libvirt's test driver); a remote host
needs libvirt's storage-volume streams, not built yet (`not_supported`).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO
from xml.etree import ElementTree as ET

from ....protocol.vm import FileRole
from ..drivers.base import DriverError, VmInfo
from ..drivers.libvirt import STATES, LibvirtDriver
from ..stub import STUB_NAME
from .base import ExternalFile, VmFile, VmFiles

try:
    import libvirt as lv
except ImportError:  # pragma: no cover - the driver refuses to open without it
    lv = None

NAMESPACE = "https://dockyard.dev/xmlns/archive/1"
CONFIG = "domain.xml"
LOCAL = ("qemu:///system", "qemu:///session", "test:///")


class LibvirtFiles(VmFiles):
    hypervisor = "libvirt"

    def __init__(self, driver: LibvirtDriver) -> None:
        self.driver = driver
        self._pools: dict[str, Path] = {}

    def _dom(self, vm: VmInfo) -> tuple[Any, dict[str, Any]]:
        dom, host = self.driver._find(vm)
        uri = str(host["uri"])
        if not uri.startswith(LOCAL):
            raise DriverError(
                "not_supported",
                f"{uri}: archiving needs the agent on the host (storage streams not built yet)",
            )
        return dom, host

    def _xml(self, dom: Any) -> ET.Element:
        # The daemon's own description of the domain, never a user's document.
        return ET.fromstring(dom.XMLDesc(lv.VIR_DOMAIN_XML_INACTIVE))  # noqa: S314

    def _disks(self, root: ET.Element) -> list[tuple[str, str]]:
        out = []
        for disk in root.iter("disk"):
            source = disk.find("source")
            path = source.get("file") if source is not None else None
            if path:
                out.append((disk.get("device", "disk"), path))
        return out

    def _backing(self, path: str) -> list[str]:
        if not shutil.which("qemu-img") or not Path(path).exists():
            return []
        done = subprocess.run(
            ["qemu-img", "info", "--backing-chain", "--output=json", "-U", path],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            return []
        chain = json.loads(done.stdout)
        return [str(layer["filename"]) for layer in chain[1:]]

    def _others(self, dom: Any) -> dict[str, str]:
        """Every file another domain of the connection names (its backing chain too)."""
        out: dict[str, str] = {}
        me = dom.UUIDString()
        for other in dom.connect().listAllDomains():
            if other.UUIDString() == me:
                continue
            for _, path in self._disks(self._xml(other)):
                out.setdefault(path, other.name())
                for base in self._backing(path):
                    out.setdefault(base, other.name())
        return out

    def files(self, vm: VmInfo) -> tuple[list[VmFile], list[ExternalFile]]:
        dom, _ = self._dom(vm)
        root = self._xml(dom)
        config = ET.tostring(root)
        own = [VmFile(CONFIG, f"libvirt:{vm.native_id}", FileRole.CONFIG, len(config), None)]
        external: list[ExternalFile] = []
        others = self._others(dom)
        for device, path in self._disks(root):
            stat = _stat(path)
            if device != "disk" or stat is None:
                if stat is not None:
                    external.append(ExternalFile(path, stat[0], f"a {device}, kept"))
                elif device == "disk":
                    raise DriverError("file_not_found", f"{path}, a disk of {vm.name}, is gone")
                continue
            for base in self._backing(path):
                size = _stat(base)
                external.append(ExternalFile(base, size[0] if size else 0, "a backing file"))
            if path in others:
                external.append(ExternalFile(path, stat[0], f"also used by {others[path]}"))
                continue
            own.append(VmFile(f"disks/{Path(path).name}", path, FileRole.DISK, *stat))
        nvram = root.find("os/nvram")
        if nvram is not None and nvram.text and (stat := _stat(nvram.text)) is not None:
            own.append(VmFile(f"nvram/{Path(nvram.text).name}", nvram.text, FileRole.NVRAM, *stat))
        return own, external

    @contextmanager
    def reader(self, f: VmFile) -> Iterator[BinaryIO]:
        if f.name == CONFIG:
            native_id = f.source.removeprefix("libvirt:")
            dom = self._by_uuid(native_id)
            yield io.BytesIO(ET.tostring(self._xml(dom)))
            return
        try:
            with open(f.source, "rb") as stream:
                yield stream
        except FileNotFoundError:
            raise DriverError("file_not_found", f"{f.source} is gone") from None

    def _by_uuid(self, native_id: str) -> Any:
        for host in self.driver.hosts:
            try:
                return self.driver._conn(str(host["uri"])).lookupByUUIDString(native_id)
            except lv.libvirtError:
                continue
        raise DriverError("vm_not_found", f"domain {native_id} is not defined on any host")

    def write(self, f: VmFile, produce: Callable[[BinaryIO], None]) -> None:
        if f.name == CONFIG:
            # The domain stayed defined: its archived definition is read (and so checked
            # against the manifest's hash) but not applied; `hardware` compares the two.
            produce(io.BytesIO())
            return
        target = Path(f.source)
        partial = target.with_name(target.name + ".dockyard-partial")
        try:
            with open(partial, "wb") as out:
                produce(out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, target)
        except OSError as e:
            partial.unlink(missing_ok=True)
            code = "datastore_full" if e.errno == 28 else "datastore_error"
            raise DriverError(code, f"writing {target}: {e.strerror}") from None

    def delete(self, f: VmFile) -> None:
        if f.name == CONFIG:
            return
        Path(f.source).unlink(missing_ok=True)

    def stat(self, f: VmFile) -> tuple[int, str | None] | None:
        if f.name == CONFIG:
            return (f.size, None)
        return _stat(f.source)

    def _stub_path(self, vm: VmInfo) -> Path:
        """Beside the domain's first disk, named for the domain (one folder may hold the
        disks of many domains)."""
        dom, _ = self._dom(vm)
        disks = [p for d, p in self._disks(self._xml(dom)) if d == "disk"]
        folder = Path(disks[0]).parent if disks else Path("/var/lib/libvirt/images")
        return folder / f"{vm.native_id}.{STUB_NAME}"

    def read_stub(self, vm: VmInfo) -> bytes | None:
        path = self._stub_path(vm)
        return path.read_bytes()[: 1 << 20] if path.exists() else None

    def write_stub(self, vm: VmInfo, raw: bytes) -> None:
        path = self._stub_path(vm)
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(raw)
        os.replace(partial, path)

    def remove_stub(self, vm: VmInfo) -> None:
        self._stub_path(vm).unlink(missing_ok=True)

    def _metadata(self, dom: Any) -> str | None:
        """The element in the domain's persistent definition, where the fence lives: a
        running domain's live copy is the definition as it was at its start, so reading
        the current one would still say fenced after an unfence while someone runs it."""
        try:
            return str(
                dom.metadata(lv.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, lv.VIR_DOMAIN_AFFECT_CONFIG)
            )
        except lv.libvirtError:
            return None

    def _set_metadata(self, dom: Any, element: str | None) -> None:
        """Set (or remove) the element in the persistent definition, and in the live one
        too when the domain runs (a roll back after someone started it mid-archive)."""
        flags = lv.VIR_DOMAIN_AFFECT_CONFIG
        if dom.isActive():
            flags |= lv.VIR_DOMAIN_AFFECT_LIVE
        dom.setMetadata(
            lv.VIR_DOMAIN_METADATA_ELEMENT,
            element,
            "dockyard" if element else None,
            NAMESPACE,
            flags,
        )

    def fenced(self, vm: VmInfo) -> bool:
        dom, _ = self._dom(vm)
        return "fenced" in (self._metadata(dom) or "")

    def fence(self, vm: VmInfo) -> dict[str, str]:
        dom, host = self._dom(vm)
        placement = {"host": str(host.get("name") or host["uri"])}
        if self.fenced(vm):
            return placement
        if self.power_state(vm) != "off":
            raise DriverError("invalid_power_state", f"{vm.name} is not off; not archived")
        placement["autostart"] = "1" if dom.autostart() else "0"
        dom.setAutostart(0)
        self._set_metadata(dom, f"<archive state='fenced' autostart='{placement['autostart']}'/>")
        return placement

    def unfence(self, vm: VmInfo, placement: dict[str, str] | None) -> None:
        dom, _ = self._dom(vm)
        if not self.fenced(vm):
            return
        self._set_metadata(dom, None)
        if placement and placement.get("autostart") == "1":
            dom.setAutostart(1)

    def power_state(self, vm: VmInfo) -> str:
        dom, _ = self._dom(vm)
        return STATES.get(dom.state()[0], "off")

    def power_on(self, vm: VmInfo) -> None:
        dom, _ = self._dom(vm)
        if not dom.isActive():
            dom.create()

    def hardware(self, vm: VmInfo) -> dict[str, Any]:
        dom, _ = self._dom(vm)
        root = self._xml(dom)
        return {
            "cpus": int(root.findtext("vcpu") or 0),
            "memory_kib": int(root.findtext("memory") or 0),
            "macs": sorted(
                (m.get("address") or "").lower() for m in root.iter("mac") if m.get("address")
            ),
            "disks": sorted(
                [
                    (target.get("dev") or "", source.get("file") or "")
                    for disk in root.iter("disk")
                    if (target := disk.find("target")) is not None
                    and (source := disk.find("source")) is not None
                ]
            ),
            "uuid": dom.UUIDString(),
            "os": root.findtext("os/type") or "",
        }

    def mark(self, vm: VmInfo, text: str | None) -> None:
        dom, _ = self._dom(vm)
        if text is None:
            return  # unfence removed the element
        escaped = text.replace("&", "&amp;").replace("'", "&apos;").replace("<", "&lt;")
        self._set_metadata(dom, f"<archive state='fenced' archived='{escaped}'/>")

    # --- another storage pool ---------------------------------------------------------

    def _pool_dirs(self, conn: Any) -> dict[str, Path]:
        """The connection's active directory pools whose folder is on this host."""
        out = {}
        for pool in conn.listAllStoragePools(lv.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
            root = ET.fromstring(pool.XMLDesc(0))  # noqa: S314 - the daemon's own document
            path = root.findtext("target/path")
            if root.get("type") == "dir" and path and Path(path).is_dir():
                out[str(pool.name())] = Path(path)
        return out

    def places(self, vm: VmInfo) -> dict[str, int]:
        """Directory storage pools of the domain's host (their folders must be here)."""
        dom, _ = self._dom(vm)
        self._pools = self._pool_dirs(dom.connect())
        return {name: shutil.disk_usage(path).free for name, path in self._pools.items()}

    def relocate(self, f: VmFile, place: str) -> VmFile:
        """The file in pool `place` of the host `places` was last asked about."""
        if f.name == CONFIG:
            return f
        pools = self._pools
        if place not in pools:
            raise DriverError("datastore_not_found", f"storage pool {place} is not on this host")
        return VmFile(f.name, str(pools[place] / Path(f.source).name), f.role, f.size, f.modified)

    def repoint(
        self, vm: VmInfo, moved: dict[str, str], halfway: Callable[[], None] | None = None
    ) -> None:
        """The domain redefined with its disks' new sources; the stub, which lives beside
        the first disk, moves with it (written there before the old one goes, so it is
        always in one place at least; a crash between leaves a copy, removed next time).
        `halfway` comes once the stub's new copy is written, before the domain is
        redefined: the stub in both folders, the domain still naming the old paths."""
        dom, _ = self._dom(vm)
        root = self._xml(dom)
        old_stub = self._stub_path(vm)
        changed = False
        for disk in root.iter("disk"):
            source = disk.find("source")
            path = source.get("file") if source is not None else None
            if source is not None and path in moved:
                source.set("file", moved[path])
                changed = True
        raw = old_stub.read_bytes() if old_stub.exists() else None
        if changed:
            disks = [p for d, p in self._disks(root) if d == "disk"]
            if raw is not None and disks:
                new_stub = Path(disks[0]).parent / old_stub.name
                partial = new_stub.with_name(new_stub.name + ".partial")
                partial.write_bytes(raw)
                os.replace(partial, new_stub)
            if halfway is not None:
                halfway()
            dom.connect().defineXML(ET.tostring(root, encoding="unicode"))
        # The stub where the disks were before (this run's or a crashed run's) goes.
        current = self._stub_path(vm)
        for before in moved:
            stale = Path(before).parent / old_stub.name
            if stale != current:
                stale.unlink(missing_ok=True)

    def free_bytes(self, f: VmFile) -> int | None:
        if f.name == CONFIG:
            return None
        folder = Path(f.source).parent
        return shutil.disk_usage(folder).free if folder.exists() else None


def _stat(path: str) -> tuple[int, str | None] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_size, datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC).isoformat()
