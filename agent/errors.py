"""The agent's one exception hierarchy; every message says what to do next.

Each error carries the exit code `dockyard-agent` ends with, one per kind of cause, so a
script or systemd can tell them apart (the agent's README lists them):

| code | meaning |
|---|---|
| 0 | done |
| 1 | the command could not do its work (the cloud refused, not docked, already docked) |
| 2 | bad input: a usage error, a malformed enrolment token, a URL or file that cannot be used |
| 3 | `run`: the cloud no longer accepts this agent (revoked); dock again |
| 4 | `vault`: wrong passphrase or key |
| 5 | the local state needs a hand: `agent.db` damaged, a key file unsafe or missing |
| 6 | the cloud, or a hypervisor endpoint (`vm discover`), could not be reached; try again later |
| 141 | the reader of the output went away (`... | head`); what it read is whole |
"""

from __future__ import annotations

from pathlib import Path

# The cloud's CLI ends so too when its reader left, and may not import this file.
from .commandline import EXIT_PIPE as EXIT_PIPE

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_REVOKED = 3
EXIT_STATE = 5
EXIT_UNREACHABLE = 6


class AgentError(Exception):
    """Base of every error the agent reports to its user."""

    exit_code = EXIT_FAILED


class BadInput(AgentError):
    """What the user gave cannot be used; nothing was changed."""

    exit_code = EXIT_BAD_INPUT


class NotDocked(AgentError):
    def __init__(self, link: str) -> None:
        super().__init__(f"this agent is not docked (link {link!r}); run `dockyard-agent dock`")


class AlreadyDocked(AgentError):
    pass


class LinkRefused(AgentError):
    """The cloud answered, and said no: a revoked agent, a used token, a refused upload."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(f"the cloud refused ({status} {error}): {message}")
        self.status, self.error, self.message = status, error, message


class LinkUnavailable(AgentError):
    """The cloud could not be reached or is overloaded; try again later."""

    exit_code = EXIT_UNREACHABLE

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InsecureURL(BadInput):
    pass


class FlowModeForbids(AgentError):
    """The agent will not send what its flow mode forbids; nothing left the host."""


class StateError(AgentError):
    """The state directory or a file in it needs the user's hand before the agent goes on."""

    exit_code = EXIT_STATE


class StateUnusable(StateError):
    pass


class StateDamaged(StateError):
    """`agent.db` cannot be read as a database; nothing has been changed in it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"{path} is damaged ({reason}); `dockyard-agent repair` sets it aside and keeps "
            "what can still be read (the link too, if it can), or tells you to dock again"
        )
        self.path, self.reason = path, reason


class KeyFileError(StateError):
    """The agent's key file is missing, unsafe or not a key."""


class StateTooNew(StateError):
    """A state file written by a newer agent, whose schema this one does not know."""

    def __init__(self, path: Path, version: int, known: int) -> None:
        super().__init__(
            f"{path} was written by a newer dockyard-agent (schema version {version}; this one "
            f"knows up to {known}); install that version again, or restore a backup of {path}"
        )
        self.path, self.version, self.known = path, version, known
