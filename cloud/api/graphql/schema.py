"""The schema: one file per concept, merged here. A concept's file holds its types, its
`…Query` and `…Mutation` and its result unions; a new concept adds its file and one line to
each list below. A module's (`cloud/modules/<name>/graphql.py`) come from the registry,
after the concepts. Every field sits behind `Authenticated` and every mutation declares its
permissions, or the schema refuses to build."""

from collections.abc import Iterable
from typing import Any

import strawberry
from graphql import GraphQLError
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.extensions import AddValidationRules, MaxAliasesLimiter, QueryDepthLimiter
from strawberry.schema.schema import DEFAULT_ALLOWED_OPERATION_TYPES
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext
from strawberry.types.execution import ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.utils.str_converters import to_camel_case

from dockyard.cloud.domain.permissions import Permission as P

from . import (
    agents,
    api_tokens,
    audit,
    commands,
    dashboard,
    enrolment,
    limits,
    live,
    members,
    policies,
    tenants,
)
from .extensions import MaskUnexpected, RequestSession, log_errors
from .fields import NEEDS, mutation, query
from .module_parts import module_parts

Query = merge_types(
    "Query",
    (
        tenants.TenantQuery,
        members.MemberQuery,
        api_tokens.ApiTokenQuery,
        dashboard.DashboardQuery,
        agents.AgentQuery,
        enrolment.EnrolmentQuery,
        policies.PolicyQuery,
        commands.CommandQuery,
        audit.AuditQuery,
        *module_parts("Query"),
    ),
)
Mutation = merge_types(
    "Mutation",
    (
        tenants.TenantMutation,
        members.MemberMutation,
        api_tokens.ApiTokenMutation,
        agents.AgentMutation,
        enrolment.EnrolmentMutation,
        policies.PolicyMutation,
        commands.CommandMutation,
        *module_parts("Mutation"),
    ),
)

Subscription = merge_types("Subscription", (live.LiveSubscription,))

__all__ = [
    "Mutation",
    "Query",
    "Subscription",
    "build_schema",
    "mutation",
    "mutation_needs",
    "query",
]


def mutation_needs() -> dict[str, tuple[P, ...]]:
    """Each mutation's GraphQL name and the permissions it declares."""
    definition = getattr(Mutation, "__strawberry_definition__")  # noqa: B009 - set by strawberry
    return {
        to_camel_case(f.python_name): tuple(f.metadata.get(NEEDS, ())) for f in definition.fields
    }


def build_schema(*, introspection: bool = True) -> strawberry.Schema:
    for cls in (Query, Mutation, Subscription):
        definition = getattr(cls, "__strawberry_definition__")  # noqa: B009 - set by strawberry
        for f in definition.fields:
            if not f.permission_classes:
                raise RuntimeError(
                    f"{cls.__name__}.{f.name} has no permission class; refusing to start"
                )
            if cls is Mutation and not f.metadata.get(NEEDS):
                raise RuntimeError(f"mutation {f.name} declares no permission; refusing to start")
    # The limits' rule classes are made once: each limiter builds a new class when
    # constructed, and the validation cache is keyed by the rules, so limiters built per
    # request would never hit it. Parsing and validating took 4 ms of the event loop per
    # request, more than the database work of issuing a command (bench/poll_latency.py).
    rules = [
        *QueryDepthLimiter(max_depth=limits.MAX_DEPTH).validation_rules,
        *MaxAliasesLimiter(max_alias_count=limits.MAX_ALIASES).validation_rules,
        limits.FieldCountRule,
    ]
    if not introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    return DockyardSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=[
            RequestSession,
            MaskUnexpected,
            lambda: AddValidationRules(rules),
            limits.OffLoopDocument,
        ],
    )


class DockyardSchema(strawberry.Schema):
    async def execute(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        """Queries and mutations only: a subscription is served over WebSocket
        (`live_app.py`, through `subscribe`); POSTed, strawberry would run its generator
        as a field and fail, so it is a 400 ("subscriptions are not allowed ...")."""
        allowed = set(allowed_operation_types or DEFAULT_ALLOWED_OPERATION_TYPES)
        allowed.discard(OperationType.SUBSCRIPTION)
        return await super().execute(
            query,
            variable_values,
            context_value,
            root_value,
            operation_name,
            allowed,
            operation_extensions,
        )

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        log_errors(errors)
