"""Schema extensions: the request's session is closed when its operation ends."""

from collections.abc import Iterator

from strawberry.extensions import SchemaExtension


class RequestSession(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        yield
        context = self.execution_context.context
        close = getattr(context, "close", None)
        if close is not None:
            close()
