"""What a GraphQL request may cost before it runs, and where that cost is paid.

The HTTP view refuses a body over `MAX_BODY_BYTES` and a query over `MAX_QUERY_CHARS`
before parsing; the parser stops at `MAX_TOKENS`; validation refuses an operation deeper
than `MAX_DEPTH`, with more than `MAX_ALIASES` aliases or selecting more than `MAX_FIELDS`
fields (fragments expanded). A document longer than `INLINE_CHARS` is parsed and validated
on a worker thread (`OffLoopDocument`): a 1 MB query repeating one field held the event
loop, `/healthz` included, for 12 s; a smaller one costs less than the thread hop.
"""

from collections.abc import AsyncIterator, Callable
from functools import lru_cache
from typing import Any

import anyio
import anyio.to_thread
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationRule,
    parse,
)
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

MAX_BODY_BYTES = 256 * 1024
MAX_QUERY_CHARS = 20_000
MAX_TOKENS = 2_000
MAX_DEPTH = 10
MAX_ALIASES = 20
MAX_FIELDS = 500
INLINE_CHARS = 2_000
CACHE_SIZE = 256

# At most this many documents are parsed or validated at once, so a burst of large ones
# cannot take every worker thread from database work.
_LIMITER = anyio.CapacityLimiter(2)


def too_long(query: str) -> str | None:
    """The refusal for a query text over the size limit, or None."""
    if len(query) > MAX_QUERY_CHARS:
        return f"a query has at most {MAX_QUERY_CHARS} characters; this one has {len(query)}"
    return None


@lru_cache(maxsize=CACHE_SIZE)
def parse_document(query: str) -> DocumentNode:
    """Parsed once per distinct text; a refused text raises and is not cached."""
    refusal = too_long(query)
    if refusal is not None:
        raise GraphQLError(refusal)
    return parse(query, max_tokens=MAX_TOKENS)


_validate = lru_cache(maxsize=CACHE_SIZE)(validate_document)


async def _maybe_off_loop(big: bool, fn: Callable[..., Any], *args: Any) -> Any:
    if not big:
        return fn(*args)
    return await anyio.to_thread.run_sync(fn, *args, limiter=_LIMITER)


class OffLoopDocument(SchemaExtension):
    """Parse and validate with the limits above, large documents on a worker thread. It
    sets the document and the validation errors itself, so strawberry's own parse and
    validation steps find them done."""

    async def on_parse(self) -> AsyncIterator[None]:
        context = self.execution_context
        query = context.query or ""
        big = len(query) > INLINE_CHARS
        context.graphql_document = await _maybe_off_loop(big, parse_document, query)
        yield

    async def on_validate(self) -> AsyncIterator[None]:
        context = self.execution_context
        assert context.graphql_document is not None
        big = len(context.query or "") > INLINE_CHARS
        errors = await _maybe_off_loop(
            big,
            _validate,
            context.schema._schema,
            context.graphql_document,
            tuple(context.validation_rules),
        )
        context.pre_execution_errors = list(errors)
        yield


class FieldCountRule(ValidationRule):
    """Refuses an operation selecting more than `MAX_FIELDS` fields, counting each
    fragment's fields where it is spread (each fragment counted once per name, so a chain
    of fragments costs linear time)."""

    def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
        fragments = {
            d.name.value: d
            for d in self.context.document.definitions
            if isinstance(d, FragmentDefinitionNode)
        }
        costs: dict[str, int] = {}

        def cost(selections: SelectionSetNode | None, seen: frozenset[str]) -> int:
            total = 0
            for selection in selections.selections if selections else ():
                if isinstance(selection, FieldNode):
                    total += 1 + cost(selection.selection_set, seen)
                elif isinstance(selection, InlineFragmentNode):
                    total += cost(selection.selection_set, seen)
                elif isinstance(selection, FragmentSpreadNode):
                    name = selection.name.value
                    if name in seen or name not in fragments:
                        continue  # a cycle or an unknown fragment: other rules report it
                    if name not in costs:
                        costs[name] = cost(fragments[name].selection_set, seen | {name})
                    total += costs[name]
                if total > MAX_FIELDS:
                    return total
            return total

        selected = cost(node.selection_set, frozenset())
        if selected > MAX_FIELDS:
            self.report_error(
                GraphQLError(
                    f"an operation selects at most {MAX_FIELDS} fields; this one more", node
                )
            )
