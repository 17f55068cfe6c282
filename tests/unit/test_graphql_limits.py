"""The query limits hold on every request, cached validation or not."""

from __future__ import annotations

import asyncio

from dockyard.cloud.api.graphql.schema import build_schema

DEEP = "{ tenants { id " + "".join("parent { " for _ in range(12)) + "id" + " }" * 12 + " } }"
ALIASES = "{ " + " ".join(f"a{i}: tenants {{ id }}" for i in range(25)) + " }"


def _errors(query: str) -> list[str]:
    schema = build_schema()
    result = asyncio.run(schema.execute(query))
    return [e.message for e in result.errors or []]


def test_depth_and_alias_limits_hold_on_every_request() -> None:
    for _ in range(3):  # the first parses and validates; the next come from the caches
        deep = _errors(DEEP)
        assert any("exceeds maximum operation depth" in e for e in deep), deep
        aliases = _errors(ALIASES)
        assert any("alias" in e.lower() for e in aliases), aliases


def test_a_cached_query_is_still_checked_against_the_schema() -> None:
    for _ in range(2):
        errors = _errors("{ tenants { noSuchField } }")
        assert any("noSuchField" in e for e in errors), errors
