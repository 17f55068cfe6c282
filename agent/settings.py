"""The agent's settings from its environment, in one typed place, read when asked for.

They used to be read where they were used, one at import time (the state directory), so a
test or a service manager that set a variable after the first import was not heard and a
newcomer had to grep for `os.environ` to learn what can be set. Command-line options still
win over these (`--state`, `--log-format`). The vault, which also runs as a tool of its
own, reads its own variables where it uses them; they are listed here too, so `VARIABLES`
is the one reference of everything the agent reads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

VARIABLES = {
    "DOCKYARD_AGENT_STATE": "the state directory (default /var/lib/dockyard-agent)",
    "DOCKYARD_AGENT_MACHINE_ID": "the machine id sent when docking (default /etc/machine-id)",
    "DOCKYARD_CLOCK": "system (default), file:/path, scale:N or scale:N:/path (tests, demos)",
    "DOCKYARD_AGENT_LOG_FORMAT": "text (default) or json",
    "DOCKYARD_VAULT_PASSPHRASE": "vault: the repository's passphrase when no file is named",
    "DOCKYARD_VAULT_NEW_PASSPHRASE": "vault: the passphrase `key add-passphrase` adds",
    "DOCKYARD_VAULT_WORKERS": "vault: threads that store and restore (default: the cores, 2 to 8)",
    "DOCKYARD_VAULT_CACHE": "vault: the files cache (default $XDG_CACHE_HOME/dockyard-vault)",
    "DOCKYARD_S3_ENDPOINT": "vault: an S3 endpoint other than AWS's (keys: boto3's AWS_ variables)",
    "DOCKYARD_CRASH_AT": "tests only: the agent's crash point to kill itself at",
    "DOCKYARD_VAULT_CRASH_AT": "tests only: the vault's crash point to kill itself at",
}
"""Every variable the agent reads, in one place: `--help` prints it and
docs/agent-environment.md is written from it (a test keeps both, and the code, in step)."""

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


def reference() -> str:
    """The environment reference, as `--help` and docs/agent-environment.md show it."""
    width = max(len(name) for name in VARIABLES)
    return "\n".join(f"  {name.ljust(width)}  {text}" for name, text in VARIABLES.items())


def document() -> str:
    """docs/agent-environment.md, written by `python -m dockyard.agent.settings`."""
    return (
        "# The agent's environment\n\n"
        "Every variable `dockyard-agent` reads, written from `agent/settings.py` "
        "(`python -m dockyard.agent.settings > docs/agent-environment.md`); `--help` prints "
        "the same list. Options on the command line win over these.\n\n"
        f"```\n{reference()}\n```\n"
    )


if __name__ == "__main__":
    print(document(), end="")
