"""Relay cursor connections over the domain's `Page[T]`: every list a query answers is a
`…Connection` with `edges { cursor node }` and `pageInfo`, walked with `first` and `after`."""

from collections.abc import Callable
from typing import Generic, TypeVar

import strawberry

from dockyard.cloud.domain.pages import MAX_FIRST, Page, PageRequest

T = TypeVar("T")
N = TypeVar("N")

FIRST = 50
"""A page's size when the client names none; at most `MAX_FIRST`."""


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool = strawberry.field(
        description="True when this page was asked for after a cursor."
    )
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo


def request(first: int, after: str | None) -> PageRequest:
    """The domain's page request; out of range is the domain's `Invalid` (1 to MAX_FIRST)."""
    return PageRequest(first, after)


def connection(page: Page[N], of: Callable[[N], T], after: str | None) -> Connection[T]:
    edges = [Edge(cursor=x.cursor, node=of(x.node)) for x in page.edges]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=page.has_next,
            has_previous_page=after is not None,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=page.end_cursor,
        ),
    )


__all__ = ["FIRST", "MAX_FIRST", "Connection", "Edge", "PageInfo", "connection", "request"]
