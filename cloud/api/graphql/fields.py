"""How a field is declared: behind `Authenticated`, with its result union, and for a
mutation the permissions it needs. A resolver only parses its arguments, calls the domain
through `info.context.read` / `write` and maps rows to types; `Expected` turns the domain's
errors into the union's members."""

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import strawberry
from strawberry.permission import BasePermission
from strawberry.types import Info

from dockyard.cloud.domain.errors import Invalid
from dockyard.cloud.domain.permissions import Permission as P

from .context import Context
from .errors import Expected

R = TypeVar("R")

NEEDS = "dockyard.needs"


class Authenticated(BasePermission):
    """A principal was resolved at the edge; what it may do is the domain's to check."""

    message = "unauthenticated: send Authorization: Bearer <API token>"

    def has_permission(self, source: Any, info: Info[Context, None], **kwargs: Any) -> bool:
        return info.context.principal is not None


AUTH: list[type[BasePermission]] = [Authenticated]


def query(result: Any) -> Callable[[Callable[..., Awaitable[R]]], R]:
    """A query field answering `result` (a type, or a union of a type and its errors)."""
    return _field(strawberry.field, result, {})


def mutation(result: Any, *needs: P) -> Callable[[Callable[..., Awaitable[R]]], R]:
    """A mutation answering `result` that declares the permissions it needs (the domain
    checks them; `build_schema` refuses a mutation that declares none, and the test of the
    permission table holds each mutation to what it declares)."""
    if not needs:
        raise TypeError("a mutation declares the permissions it needs")
    return _field(strawberry.mutation, result, {NEEDS: needs})


def _field(
    make: Callable[..., Any], result: Any, metadata: dict[str, Any]
) -> Callable[[Callable[..., Awaitable[R]]], R]:
    """Strawberry types only its resolver-first form, so the resolver is passed
    positionally and mypy keeps the field's type."""

    def decorate(resolver: Callable[..., Awaitable[R]]) -> R:
        field = make(
            resolver,
            graphql_type=result,
            permission_classes=AUTH,
            extensions=[Expected(result)],
            metadata=metadata,
        )
        return cast(R, field)

    return decorate


def parse_id(value: strawberry.ID | str, what: str) -> uuid.UUID:
    """An id argument, or `Invalid` naming the argument."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise Invalid(f"{what} is not a valid id") from None


def json_object(value: object, refusal: str) -> dict[str, Any]:
    """A JSON argument that must be an object, or `Invalid` with `refusal`."""
    if not isinstance(value, dict):
        raise Invalid(refusal)
    return value
