"""Simulated KVM hosts for libvirt's built-in test driver: one node file per host.

`test:///abs/path/host.xml` loads a host with its own CPUs, memory, domains and storage
pool, inside the test process (no daemon). Each connection re-reads its file, so a driver
keeps its connections open for as long as a test needs the state it changed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape


@dataclass
class Domain:
    name: str
    vcpus: int = 1
    memory_mb: int = 1024
    running: bool = True
    owner: str | None = None
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    mac: str | None = None
    lines: dict[str, str] = field(default_factory=dict)
    """More `key=value` lines of the description (the driver reads them as tags)."""


def host_file(folder: Path, name: str, cpus: int, memory_mb: int, domains: list[Domain]) -> str:
    """Writes the node file of one host; returns its test:/// URI."""
    parts = [
        "<node>",
        f"<cpu><mhz>2400</mhz><model>x86_64</model><nodes>1</nodes><sockets>1</sockets>"
        f"<cores>{cpus}</cores><threads>1</threads><active>{cpus}</active></cpu>",
        f"<memory>{memory_mb * 1024}</memory>",
    ]
    for d in domains:
        mac = d.mac or "52:54:00:" + ":".join(f"{b:02x}" for b in uuid.UUID(d.uuid).bytes[:3])
        described = ([f"owner={d.owner}"] if d.owner else []) + [
            f"{k}={v}" for k, v in d.lines.items()
        ]
        description = (
            f"<description>{escape(chr(10).join(described))}</description>" if described else ""
        )
        parts.append(
            "<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>"
            f"<test:runstate>{1 if d.running else 5}</test:runstate><name>{escape(d.name)}</name><uuid>{d.uuid}</uuid>{description}"
            f"<memory>{d.memory_mb * 1024}</memory><vcpu>{d.vcpus}</vcpu>"
            "<os><type>hvm</type></os><devices>"
            f'<disk type="file" device="disk"><source file="/pool-{name}/{d.name}.img"/>'
            '<target dev="vda" bus="virtio"/></disk>'
            f'<interface type="network"><mac address="{mac}"/><source network="default"/>'
            f'<target dev="vnet-{d.name[:8]}"/></interface>'
            "</devices></domain>"
        )
    parts.append(
        '<network><name>default</name><bridge name="virbr0"/><forward/>'
        '<ip address="192.168.122.1" netmask="255.255.255.0"/></network>'
        f'<pool type="dir"><name>pool-{name}</name><uuid>{uuid.uuid4()}</uuid>'
        f"<source/><target><path>/pool-{name}</path></target></pool>"
        "</node>"
    )
    path = folder / f"{name}.xml"
    path.write_text("".join(parts))
    return f"test://{path}"
