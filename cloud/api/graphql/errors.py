"""The errors a field can answer, as result union members. Each field's union names the ones
it can really give (`IssueCommandResult = Command | AgentNotFound | AgentRevoked | ...`), so a
client matches the case it means; every error implements `Error { message }` for the rest.

`Expected` maps a domain error to the first member of the field's union that matches it. A
domain error the union does not name becomes a GraphQL error with the domain's message (a
sentence written for the reader, never exception text), and is logged: it means a union is
missing a member."""

from collections.abc import Callable
from typing import Any, get_args

import strawberry
from graphql import GraphQLError
from strawberry.extensions import FieldExtension
from strawberry.extensions.field_extension import AsyncExtensionResolver
from strawberry.types import Info

from dockyard.cloud.domain import errors as e


@strawberry.interface(description="What every expected error carries: a sentence to act on.")
class Error:
    message: str


def _not_found(what: str) -> Callable[[e.DomainError], bool]:
    return lambda err: isinstance(err, e.NotFound) and err.what == what


@strawberry.type(description="No such tenant, or one out of your sight (the two look alike).")
class TenantNotFound(Error):
    pass


@strawberry.type(description="No such site, or another tenant's.")
class SiteNotFound(Error):
    pass


@strawberry.type(description="No such agent, or another tenant's.")
class AgentNotFound(Error):
    pass


@strawberry.type(description="No such enrolment token, or another tenant's.")
class EnrolmentTokenNotFound(Error):
    pass


@strawberry.type(description="No such policy, or another tenant's.")
class PolicyNotFound(Error):
    pass


@strawberry.type(description="No such command, or another tenant's.")
class CommandNotFound(Error):
    pass


@strawberry.type(description="No such job, or another tenant's.")
class JobNotFound(Error):
    pass


@strawberry.type(description="No such VM sighting, or another tenant's.")
class VmSightingNotFound(Error):
    pass


@strawberry.type(
    description="No such member of this tenant (a grant through its MSP is changed there)."
)
class MemberNotFound(Error):
    pass


@strawberry.type(description="No such API token, or another tenant's.")
class ApiTokenNotFound(Error):
    pass


@strawberry.type(description="The policy is not assigned to that target.")
class PolicyAssignmentNotFound(Error):
    pass


@strawberry.type(description="Your grants in this tenant do not allow it; the refusal is audited.")
class PermissionDenied(Error):
    pass


@strawberry.type(description="The tenant is archived: it allows reads only.")
class TenantArchived(Error):
    pass


@strawberry.type(description="The agent was revoked: it takes no more commands.")
class AgentRevoked(Error):
    pass


@strawberry.type(description="The name is taken already where it must be unique.")
class NameTaken(Error):
    pass


@strawberry.type(description="One thing wrong in a structured input, at its place.")
class FieldProblem:
    path: str = strawberry.field(
        description="Dotted from the input's root (`archive.min_vm_gb`, `signals.0`); empty "
        "for the input as a whole."
    )
    message: str


@strawberry.type(description="An argument is out of range or malformed; the message says which.")
class InvalidInput(Error):
    problems: list[FieldProblem] = strawberry.field(
        default_factory=list,
        description="Where a document (a policy's) was wrong, one per problem, so a form can "
        "say it at the field; empty when the message is all there is.",
    )


MATCHES: dict[type[Error], Callable[[e.DomainError], bool]] = {
    TenantNotFound: _not_found("tenant"),
    SiteNotFound: _not_found("site"),
    AgentNotFound: _not_found("agent"),
    EnrolmentTokenNotFound: _not_found("enrolment token"),
    PolicyNotFound: _not_found("policy"),
    CommandNotFound: _not_found("command"),
    JobNotFound: _not_found("job"),
    VmSightingNotFound: _not_found("sighting"),
    MemberNotFound: _not_found("member"),
    ApiTokenNotFound: _not_found("API token"),
    PolicyAssignmentNotFound: _not_found("policy assignment"),
    PermissionDenied: lambda err: isinstance(err, e.Forbidden | e.FlowModeForbids),
    TenantArchived: lambda err: isinstance(err, e.Archived),
    AgentRevoked: lambda err: isinstance(err, e.Revoked),
    NameTaken: lambda err: isinstance(err, e.Conflict) and not isinstance(err, e.Archived),
    InvalidInput: lambda err: isinstance(err, e.Invalid),
}


def members(result: Any) -> tuple[type[Error], ...]:
    """The error members of a result union (`Annotated[A | B, strawberry.union(...)]`)."""
    inner = get_args(result)[0] if get_args(result) else result
    return tuple(m for m in get_args(inner) if isinstance(m, type) and issubclass(m, Error))


class Expected(FieldExtension):
    """Turns the domain errors a field's union names into that union's members."""

    def __init__(self, result: Any) -> None:
        self.errors = members(result)

    async def resolve_async(
        self, next_: AsyncExtensionResolver, source: Any, info: Info, **kwargs: Any
    ) -> Any:
        try:
            return await next_(source, info, **kwargs)
        except e.DomainError as err:
            for member in self.errors:
                if MATCHES[member](err):
                    if member is InvalidInput and isinstance(err, e.Invalid):
                        found = [FieldProblem(path=p.path, message=p.message) for p in err.problems]
                        return InvalidInput(message=err.message, problems=found)
                    return member(message=err.message)
            raise GraphQLError(err.message) from None
