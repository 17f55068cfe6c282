"""The domain's one exception hierarchy. Transports map each class to their own error form;
messages are written for the person who will read them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass


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
        self.what = what
        """What was looked for ("agent", "site"...): transports name their error by it."""


class Forbidden(DomainError):
    code = "forbidden"


class Refused(Forbidden):
    """A privileged act the principal's grants do not allow, in a tenant it can see. The
    transports write it to that tenant's audit log in a transaction of its own, since the
    request's own is rolled back."""

    def __init__(self, permission: str, tenant_id: uuid.UUID, message: str) -> None:
        super().__init__(message)
        self.permission = permission
        self.tenant_id = tenant_id


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a document, at its place: `path` is dotted from the document's
    root (`archive.min_vm_gb`, `signals.0`), empty for the document as a whole."""

    path: str
    message: str


class Invalid(DomainError):
    code = "invalid"

    def __init__(self, message: str, problems: tuple[Problem, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems
        """Where a structured input was wrong, so a form can say it at the field."""


class Revoked(Invalid):
    """The agent was revoked: it takes no more commands."""

    code = "revoked"


class Conflict(DomainError):
    code = "conflict"


class Archived(Conflict):
    """The tenant is archived: it allows reads only."""

    code = "archived"


class Unauthenticated(DomainError):
    code = "unauthenticated"


class FlowModeForbids(DomainError):
    """The tenant's effective flow mode does not allow what was sent; nothing was stored."""

    code = "flow_mode_forbids"
