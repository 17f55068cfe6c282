"""The domain's one exception hierarchy. Transports map each class to their own error form;
messages are written for the person who will read them."""

from __future__ import annotations


class DomainError(Exception):
    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DomainError):
    """Missing, or another tenant's: the two are deliberately indistinguishable."""

    code = "not_found"

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")


class Forbidden(DomainError):
    code = "forbidden"


class Invalid(DomainError):
    code = "invalid"


class Conflict(DomainError):
    code = "conflict"


class Unauthenticated(DomainError):
    code = "unauthenticated"


class FlowModeForbids(DomainError):
    """The tenant's effective flow mode does not allow what was sent; nothing was stored."""

    code = "flow_mode_forbids"
