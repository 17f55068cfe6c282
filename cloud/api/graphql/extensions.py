"""Schema extensions: the request's session closed when its operation ends, and errors
that no one expected masked before they reach the client."""

import logging
from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import MaskErrors, SchemaExtension

from dockyard.cloud.api import request_ids

log = logging.getLogger(__name__)


class RequestSession(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        yield
        context = self.execution_context.context
        close = getattr(context, "close", None)
        if close is not None:
            close()


def unexpected(error: GraphQLError) -> bool:
    """An exception a resolver or the machinery raised by surprise, as opposed to the
    errors GraphQL itself makes (syntax, validation, permission, a domain error's message):
    its text is the code's, never the client's."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


class MaskUnexpected(MaskErrors):
    """An unexpected error answers a generic message with the request's id; the log line
    (`log_errors`) carries the same id and the traceback."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=unexpected)

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        return GraphQLError(
            message=request_ids.internal_error_message(request_ids.current()),
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
        )


def log_errors(errors: list[GraphQLError]) -> None:
    """One line per error: the unexpected with their traceback at ERROR, the rest (a bad
    query, a refusal) at INFO without one."""
    request_id = request_ids.current()
    for error in errors:
        path = ".".join(map(str, error.path or ()))
        if unexpected(error):
            log.error(
                "unexpected error in a GraphQL operation",
                exc_info=error.original_error,
                extra={"request_id": request_id, "graphql_path": path},
            )
        else:
            log.info(
                "GraphQL error: %s",
                error.message,
                extra={"request_id": request_id, "graphql_path": path},
            )
