"""The hypervisor endpoints this agent manages, in the module's folder (mode 0600: it holds
passwords). Names are the agent's own and appear in every command that addresses a VM as
(agent, endpoint, native id).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from .drivers import KINDS
from .drivers.base import DriverError

NAME = re.compile(r"^[a-z][a-z0-9_\-]{0,39}$")
REQUIRED = {"vsphere": ("host",), "libvirt": ("hosts",), "ec2": ("region",)}


class Endpoints:
    def __init__(self, path: Path) -> None:
        self.path = path

    def all(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        data: dict[str, dict[str, Any]] = json.loads(self.path.read_text())
        return data

    def get(self, name: str) -> dict[str, Any]:
        found = self.all().get(name)
        if found is None:
            raise DriverError("unknown_endpoint", f"no endpoint named {name!r}")
        return found

    def add(self, name: str, config: dict[str, Any]) -> None:
        if not NAME.match(name):
            raise DriverError(
                "bad_config", f"endpoint name {name!r}: lower-case letters, digits, - and _"
            )
        kind = config.get("kind")
        if kind not in KINDS:
            raise DriverError("bad_config", f"endpoint {name}: kind is one of {', '.join(KINDS)}")
        missing = [k for k in REQUIRED[str(kind)] if not config.get(k)]
        if missing:
            raise DriverError("bad_config", f"endpoint {name}: {', '.join(missing)} required")
        data = self.all()
        data[name] = config
        self._write(data)

    def remove(self, name: str) -> bool:
        data = self.all()
        if data.pop(name, None) is None:
            return False
        self._write(data)
        return True

    def _write(self, data: dict[str, dict[str, Any]]) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
