"""The VM module's own configuration, in its folder: `settings.json` (SMTP, the answer
links' address, the worker's pace, the archive key files' paths, S3 credentials, the
webhook secret; written 0600), the local policy (`policy.json`), the answer links' key
(`link.key`), and the cloud's policy while one is assigned.

The cloud's policy never widens the local one: `policy()` cuts its budget and scope to the
local policy's, which is why both are read here, in one place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ...protocol.vm import VmLifecyclePolicy
from . import notices
from .endpoints import Endpoints
from .lifecycle import new_link_key
from .store import HOST_PREFIX, StoredVm


class Settings:
    def __init__(self, state_dir: Path, endpoints: Endpoints) -> None:
        self.state_dir = state_dir
        self.endpoints = endpoints
        self.docked: VmLifecyclePolicy | None = None
        """The cloud's policy while one is assigned (docked), else None."""

    @property
    def settings_path(self) -> Path:
        return self.state_dir / "settings.json"

    def settings(self) -> dict[str, Any]:
        if not self.settings_path.exists():
            return {}
        data: dict[str, Any] = json.loads(self.settings_path.read_text())
        return data

    def update_settings(self, **values: Any) -> None:
        data = self.settings()
        data.update(values)
        tmp = self.settings_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
        os.replace(tmp, self.settings_path)

    def link_key(self) -> bytes:
        """The key answer links are signed with, made on first use (0600)."""
        path = self.state_dir / "link.key"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(new_link_key())
        return path.read_bytes()

    def link_base(self) -> str:
        """Where a notice's links point: the configured base URL, else the listen address."""
        links = self.settings().get("links", {})
        base = links.get("base_url") or f"http://{links.get('listen', '127.0.0.1:8790')}"
        return str(base)

    def smtp(self) -> notices.SmtpConfig | None:
        smtp = self.settings().get("smtp")
        return notices.SmtpConfig.from_dict(smtp) if smtp else None

    def bmc(self, endpoint: str, host: StoredVm) -> dict[str, Any] | None:
        """The Redfish configuration the endpoint maps this physical host to, if any."""
        bmcs = self.endpoints.get(endpoint).get("bmcs") or {}
        found = bmcs.get(host.vm.native_id.removeprefix(HOST_PREFIX)) or bmcs.get(host.vm.name)
        return dict(found) if found else None

    @property
    def local_policy_path(self) -> Path:
        return self.state_dir / "policy.json"

    def policy(self) -> VmLifecyclePolicy:
        """The cloud's policy when docked and assigned (its budget no larger than the local
        policy's, or the default's: the cloud cannot raise the agent's cap), else the local
        one, else defaults."""
        local = self.local_policy()
        if self.docked is not None:
            return self.docked.within(local)
        return local

    def local_policy(self) -> VmLifecyclePolicy:
        """The agent's own policy, or defaults: docked, the ceiling of the cloud's (its
        budget and its scope)."""
        if not self.local_policy_path.exists():
            return VmLifecyclePolicy()
        return VmLifecyclePolicy.model_validate_json(self.local_policy_path.read_text())

    def set_local_policy(self, document: dict[str, Any]) -> VmLifecyclePolicy:
        policy = VmLifecyclePolicy.model_validate(document)
        self.local_policy_path.write_text(policy.model_dump_json(indent=2))
        return policy
