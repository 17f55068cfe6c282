"""libvirt's daemon with the QEMU driver: Debian's libvirt-daemon-system, qemu-system-x86
under TCG and qemu-utils (infra/dev-packages.sh), the daemons started here when they are
not running (no systemd). Its domains are real QEMU processes with a small qcow2 disk and
no OS: they power on and off for real, and their state outlives the agent that changed
them, which the test driver's cannot (it lives inside the process that opened it)."""

from __future__ import annotations

import grp
import os
import shutil
import socket
import stat
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

URI = "qemu:///system"
IMAGES = Path("/var/lib/libvirt/images")
SOCKET = Path("/var/run/libvirt/libvirt-sock")


def _answers() -> bool:
    """True when a daemon accepts on the socket: a socket file alone may be left by a
    daemon that died, or by a package's post-install start that did not last."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(SOCKET))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _libvirtd_command() -> list[str]:
    """libvirtd, in a mount namespace of its own when /dev/kvm is root's alone. Without udev
    (containers, CI) /dev/kvm stays root:root 0600: QEMU's capability probe, run as root,
    finds KVM, the domains' user (libvirt-qemu, group kvm) cannot open it, and libvirt then
    throws its capability cache away and probes again (36 s) on every defineXML. The daemon
    is shown a node for the same device with udev's ownership (root:kvm 0660); the machine's
    own /dev/kvm is left as it is."""
    kvm = Path("/dev/kvm")
    try:
        group = grp.getgrnam("kvm").gr_gid
        st = kvm.stat()
    except (KeyError, OSError):
        return ["libvirtd", "-d"]
    if st.st_gid == group and st.st_mode & 0o060 == 0o060:
        return ["libvirtd", "-d"]
    node = Path("/run/dockyard-test-kvm")
    node.unlink(missing_ok=True)
    os.mknod(node, 0o660 | stat.S_IFCHR, st.st_rdev)
    os.chown(node, 0, group)
    os.chmod(node, 0o660)
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        f"mount --bind {node} {kvm} && exec libvirtd -d",
    ]


def ensure_daemon() -> None:
    if _answers():
        return
    for folder in ("/var/log/libvirt", "/var/run/libvirt", "/var/lib/libvirt/qemu"):
        Path(folder).mkdir(parents=True, exist_ok=True)
    for stale in (SOCKET, SOCKET.with_name("libvirt-sock-ro"), Path("/var/run/libvirtd.pid")):
        stale.unlink(missing_ok=True)
    if subprocess.run(["pgrep", "-x", "virtlogd"], capture_output=True).returncode != 0:
        Path("/var/run/virtlogd.pid").unlink(missing_ok=True)
        subprocess.run(["virtlogd", "-d"], check=True)
    subprocess.run(_libvirtd_command(), check=True)
    deadline = time.monotonic() + 30
    while not _answers():
        if time.monotonic() > deadline:
            raise RuntimeError("libvirtd did not answer on its socket within 30 s")
        time.sleep(0.1)


def _xml(name: str, disk: Path) -> str:
    return (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
        "<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>"
        "<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file='{disk}'/><target dev='vda' bus='virtio'/></disk></devices></domain>"
    )


class TinyDomains:
    """`count` running domains named dockyard-test-<id>-<i>, removed on close."""

    def __init__(self, count: int) -> None:
        import libvirt

        ensure_daemon()
        self.tag = uuid.uuid4().hex[:8]
        self.folder = IMAGES / f"dockyard-test-{self.tag}"
        self.folder.mkdir(parents=True)
        self.conn = libvirt.open(URI)
        self.names: list[str] = []
        for i in range(count):
            name = f"dockyard-test-{self.tag}-{i}"
            disk = self.folder / f"{name}.qcow2"
            subprocess.run(
                ["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True
            )
            self.conn.defineXML(_xml(name, disk)).create()
            self.names.append(name)

    def states(self) -> dict[str, int]:
        return {n: self.conn.lookupByName(n).state()[0] for n in self.names}

    def close(self) -> None:
        for name in self.names:
            domain = self.conn.lookupByName(name)
            if domain.isActive():
                domain.destroy()
            domain.undefine()
        self.conn.close()
        shutil.rmtree(self.folder, ignore_errors=True)


class StopEvents:
    """Counts each domain's STOPPED lifecycle events, seen by a connection of the test's
    own (libvirt's default event loop on a thread): the hypervisor's record of how many
    times a domain went off, whatever the agent believes."""

    def __init__(self) -> None:
        import libvirt

        libvirt.virEventRegisterDefaultImpl()
        self._stop = threading.Event()
        self._loop = threading.Thread(target=self._run, daemon=True)
        self._loop.start()
        self.conn = libvirt.open(URI)
        self.stopped: Counter[str] = Counter()
        self._callback = self.conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._event, None
        )

    def _run(self) -> None:
        import libvirt

        while not self._stop.is_set():
            libvirt.virEventRunDefaultImpl()

    def _event(self, conn: Any, domain: Any, event: int, detail: int, opaque: Any) -> None:
        import libvirt

        if event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
            self.stopped[domain.name()] += 1

    def close(self) -> None:
        self.conn.domainEventDeregisterAny(self._callback)
        self.conn.close()
        self._stop.set()
