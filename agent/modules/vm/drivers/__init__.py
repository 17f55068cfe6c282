"""The hypervisor drivers, chosen by an endpoint's `kind`; each imports its SDK only when used."""

from __future__ import annotations

from typing import Any

from .base import Driver, DriverError

KINDS = ("vsphere", "libvirt", "ec2")


def open_driver(name: str, config: dict[str, Any]) -> Driver:
    kind = config.get("kind")
    if kind == "vsphere":
        from .vsphere import VsphereDriver

        return VsphereDriver(name, config)
    if kind == "libvirt":
        from .libvirt import LibvirtDriver

        return LibvirtDriver(name, config)
    if kind == "ec2":
        from .ec2 import Ec2Driver

        return Ec2Driver(name, config)
    raise DriverError("bad_config", f"endpoint {name}: kind is one of {', '.join(KINDS)}")
