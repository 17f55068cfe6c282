"""A small KVM/QEMU domain on Debian's libvirt daemon for the archive tests: a qcow2 top
image over a backing file made by qemu-img (neither boots an OS; the domain still starts
under TCG), and a second directory storage pool to restore to."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..peers.libvirt_qemu import IMAGES, URI, ensure_daemon
from ..vault.conftest import vm_like


def _xml(name: str, disk: Path) -> str:
    return (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
        "<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>"
        "<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file='{disk}'/><target dev='vda' bus='virtio'/></disk>"
        "<interface type='user'><mac address='52:54:00:aa:bb:01'/></interface>"
        "</devices></domain>"
    )


@contextmanager
def qcow2_domain() -> Iterator[tuple[Any, Path, Path]]:
    """(domain, top image, backing file), autostart on; undefined and removed after."""
    import libvirt

    ensure_daemon()
    folder = IMAGES / f"dockyard-archive-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    raw = folder / "data.raw"
    raw.write_bytes(vm_like(4_000_000, 5) + vm_like(2_000_000, 6))
    base, top = folder / "base.qcow2", folder / "top.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", str(raw), str(base)], check=True)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(top)],
        check=True,
    )
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 2M", str(top)],
                   check=True, capture_output=True)  # fmt: skip
    raw.unlink()
    conn = libvirt.open(URI)
    dom = conn.defineXML(_xml(folder.name, top))
    dom.setAutostart(1)
    try:
        yield dom, top, base
    finally:
        if dom.isActive():
            dom.destroy()
        dom.undefine()
        conn.close()
        subprocess.run(["rm", "-rf", str(folder)], check=False)


@contextmanager
def other_pool(dom: Any, beside: Path) -> Iterator[Path]:
    """A second directory pool of the domain's host, in a folder beside `beside`'s."""
    other = beside.parent.parent / f"{beside.parent.name}-other"
    other.mkdir()
    pool = dom.connect().storagePoolCreateXML(
        f"<pool type='dir'><name>{other.name}</name><target><path>{other}</path></target></pool>"
    )
    try:
        yield other
    finally:
        pool.destroy()
        subprocess.run(["rm", "-rf", str(other)], check=False)
