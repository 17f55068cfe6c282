"""What a GraphQL request may cost before it runs, and where that cost is paid.

The HTTP view refuses a body over `MAX_BODY_BYTES` and a query over `MAX_QUERY_CHARS`
before parsing; the parser stops at `MAX_TOKENS`; validation refuses an operation deeper
than `MAX_DEPTH`, with more than `MAX_ALIASES` aliases or selecting more than `MAX_FIELDS`
fields (fragments expanded); then, with the request's variables, one whose lists may
answer more than `MAX_COST` (each field under a page counted once per row the page may
hold: twenty aliases of `agents(first: 500)` asked the database for 10,000 rows). A
document longer than `INLINE_CHARS` is parsed, validated and weighed on a worker thread
(`OffLoopDocument`): a 1 MB query repeating one field held the event loop, `/healthz`
included, for 12 s; a smaller one costs less than the thread hop.
"""

from collections.abc import AsyncIterator, Callable, Mapping
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
    GraphQLField,
    GraphQLNamedType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationRule,
    VariableNode,
    get_named_type,
    get_operation_ast,
    parse,
    value_from_ast_untyped,
)
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

MAX_BODY_BYTES = 256 * 1024
MAX_QUERY_CHARS = 20_000
MAX_TOKENS = 2_000
MAX_DEPTH = 10
MAX_ALIASES = 20
MAX_FIELDS = 500
MAX_COST = 20_000
"""Weighted fields: a full page (`pages.MAX_FIRST`, 500) of 40 fields, or 50 jobs with 50
events of 6 fields each; not 20 lists of 500."""
PAGE_ARGUMENTS = ("first", "last", "limit")
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


def _validate_and_weigh(
    schema: GraphQLSchema,
    document: DocumentNode,
    rules: tuple[type[ValidationRule], ...],
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
) -> list[GraphQLError]:
    """The validation errors (cached per document), else the cost's refusal (per request,
    since it reads the variables)."""
    errors = list(_validate(schema, document, rules))
    return errors or weigh(schema, document, operation_name, variables)


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
            _validate_and_weigh,
            context.schema._schema,
            context.graphql_document,
            tuple(context.validation_rules),
            context.operation_name,
            context.variables,
        )
        context.pre_execution_errors = errors
        yield


class Cost:
    """The cost of one operation's selections: each field counts 1 plus the cost of what it
    selects; under a paginated field (one with a `first`, `last` or `limit` argument) what
    it selects counts once per row the page may hold (the argument's value, literal or
    variable, else the field's default). Each fragment is walked once per name, so a
    chain of fragments costs linear time; the walk stops once the total passes `bound`."""

    def __init__(
        self,
        schema: GraphQLSchema,
        document: DocumentNode,
        bound: int,
        variables: Mapping[str, Any] | None = None,
        weighted: bool = True,
    ) -> None:
        self.schema, self.bound, self.weighted = schema, bound, weighted
        self.variables = variables or {}
        self.fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self.costs: dict[str, int] = {}
        self.defaults: dict[str, Any] = {}

    def of_operation(self, node: OperationDefinitionNode) -> int:
        self.defaults = {
            v.variable.name.value: value_from_ast_untyped(v.default_value)
            for v in node.variable_definitions or ()
            if v.default_value is not None
        }
        root = self.schema.get_root_type(node.operation)
        return self._selections(node.selection_set, root, frozenset())

    def _selections(
        self,
        selections: SelectionSetNode | None,
        parent: GraphQLNamedType | None,
        seen: frozenset[str],
    ) -> int:
        total = 0
        for selection in selections.selections if selections else ():
            if isinstance(selection, FieldNode):
                total += self._field(selection, parent, seen)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                inner = self.schema.get_type(condition.name.value) if condition else parent
                total += self._selections(selection.selection_set, inner, seen)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name in seen or name not in self.fragments:
                    continue  # a cycle or an unknown fragment: other rules report it
                if name not in self.costs:
                    fragment = self.fragments[name]
                    inner = self.schema.get_type(fragment.type_condition.name.value)
                    self.costs[name] = self._selections(
                        fragment.selection_set, inner, seen | {name}
                    )
                total += self.costs[name]
            if total > self.bound:
                break
        return total

    def _field(self, node: FieldNode, parent: GraphQLNamedType | None, seen: frozenset[str]) -> int:
        fields = getattr(parent, "fields", None) or {}
        definition: GraphQLField | None = fields.get(node.name.value)
        inner = get_named_type(definition.type) if definition else None
        below = self._selections(node.selection_set, inner, seen)
        if below and self.weighted and definition is not None:
            below *= self._page_size(node, definition)
        return 1 + below

    def _page_size(self, node: FieldNode, definition: GraphQLField) -> int:
        """The rows a paginated field's page may hold, as asked; 1 for any other field."""
        name = next((n for n in PAGE_ARGUMENTS if n in definition.args), None)
        if name is None:
            return 1
        size = definition.args[name].default_value
        given = next((a.value for a in node.arguments or () if a.name.value == name), None)
        if isinstance(given, IntValueNode):
            size = int(given.value)
        elif isinstance(given, VariableNode):
            variable = given.name.value
            size = self.variables.get(variable, self.defaults.get(variable, size))
        return max(size, 1) if isinstance(size, int) and not isinstance(size, bool) else 1


class FieldCountRule(ValidationRule):
    """Refuses an operation selecting more than `MAX_FIELDS` fields (fragments counted
    where they are spread), whatever its page sizes: `weigh` weighs those, per request."""

    def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
        cost = Cost(self.context.schema, self.context.document, MAX_FIELDS, weighted=False)
        if cost.of_operation(node) > MAX_FIELDS:
            self.report_error(
                GraphQLError(
                    f"an operation selects at most {MAX_FIELDS} fields; this one more", node
                )
            )


def weigh(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
) -> list[GraphQLError]:
    """The refusal of the operation to run when its cost with these variables passes
    `MAX_COST`: twenty aliases of a list with `first: 500` ask for 10,000 rows at once."""
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return []  # strawberry reports the missing or ambiguous operation
    if Cost(schema, document, MAX_COST, variables).of_operation(operation) <= MAX_COST:
        return []
    return [
        GraphQLError(
            f"an operation costs at most {MAX_COST}, each field counted once per row its "
            f"lists may hold (first, last or limit, else the list's default page); this "
            f"one costs more: ask for smaller pages or fewer lists at once",
            operation,
        )
    ]
