"""The agent's settings from its environment, in one typed place, read when asked for.

They used to be read where they were used, one at import time (the state directory), so a
test or a service manager that set a variable after the first import was not heard and a
newcomer had to grep for `os.environ` to learn what can be set. Command-line options still
win over these (`--state`, `--log-format`). The vault, which also runs as a tool of its
own, reads its own variables (`DOCKYARD_VAULT_WORKERS`, `DOCKYARD_VAULT_CACHE`,
`DOCKYARD_S3_ENDPOINT`: see agent/vault/README.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

VARIABLES = {
    "DOCKYARD_AGENT_STATE": "the state directory (default /var/lib/dockyard-agent)",
    "DOCKYARD_AGENT_MACHINE_ID": "the machine id sent when docking (default /etc/machine-id)",
    "DOCKYARD_CLOCK": "system, file:/path or scale:N (tests and simulations)",
    "DOCKYARD_AGENT_LOG_FORMAT": "text (default) or json",
}
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class AgentSettings:
    state_dir: Path = Path("/var/lib/dockyard-agent")
    machine_id: str | None = None
    clock: str = "system"
    log_format: str = "text"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AgentSettings:
        """The settings the environment gives; an unknown log format falls back to text (a
        log line must never be what stops the agent), a bad clock is refused where the
        clock is built (`clock.from_env`), with its own message."""
        env = os.environ if env is None else env
        log_format = env.get("DOCKYARD_AGENT_LOG_FORMAT", "text").strip().lower()
        return cls(
            state_dir=Path(env.get("DOCKYARD_AGENT_STATE") or cls.state_dir),
            machine_id=env.get("DOCKYARD_AGENT_MACHINE_ID") or None,
            clock=env.get("DOCKYARD_CLOCK", "system"),
            log_format=log_format if log_format in LOG_FORMATS else "text",
        )
