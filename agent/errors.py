"""The agent's one exception hierarchy; every message says what to do next."""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent reports to its user."""


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

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InsecureURL(AgentError):
    pass


class FlowModeForbids(AgentError):
    """The agent will not send what its flow mode forbids; nothing left the host."""
