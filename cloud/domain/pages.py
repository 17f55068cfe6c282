"""Pages of a list: a keyset `Page[T]` and its opaque cursor, for every list a transport
shows. Offsets are not offered: a page after a cursor stays the same page while rows are
added before it, and its cost does not grow with how far a client has walked."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, literal, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from .errors import Invalid

T = TypeVar("T")
U = TypeVar("U")

MAX_FIRST = 500
"""The most rows one page holds; a client walks on with the cursor."""


@dataclass(frozen=True)
class PageRequest:
    """At most `first` rows after the row the cursor `after` names."""

    first: int = 50
    after: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.first <= MAX_FIRST:
            raise Invalid(f"first is between 1 and {MAX_FIRST}")


@dataclass(frozen=True)
class Edge(Generic[T]):
    cursor: str
    node: T


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list, in its order; `has_next` says whether rows follow the last."""

    edges: list[Edge[T]]
    has_next: bool

    @property
    def end_cursor(self) -> str | None:
        return self.edges[-1].cursor if self.edges else None

    @property
    def items(self) -> list[T]:
        return [e.node for e in self.edges]

    def map(self, fn: Callable[[T], U]) -> Page[U]:
        return Page([Edge(e.cursor, fn(e.node)) for e in self.edges], self.has_next)


def encode(key: object, row_id: uuid.UUID) -> str:
    """The cursor of a row: its sort key and id, tagged by the key's type."""
    if isinstance(key, datetime):
        tagged: list[Any] = ["t", key.isoformat()]
    elif isinstance(key, bool | int):
        tagged = ["i", int(key)]
    else:
        tagged = ["s", str(key)]
    return base64.urlsafe_b64encode(json.dumps([*tagged, str(row_id)]).encode()).decode()


def decode(cursor: str) -> tuple[object, uuid.UUID]:
    try:
        tag, value, row_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        parse: dict[str, Callable[[Any], object]] = {
            "t": datetime.fromisoformat,
            "i": int,
            "s": str,
        }
        key = parse[tag](value)
        return key, uuid.UUID(row_id)
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise Invalid("that cursor is not one this API gave out") from None


def keyset(
    session: Session,
    stmt: Select[Any],
    order: InstrumentedAttribute[Any],
    request: PageRequest,
    *,
    descending: bool = False,
) -> Page[Any]:
    """One page of `stmt`'s rows (one entity with an `id`), ordered by `order` then id. The
    session's tenancy filter applies as to any ORM query; one statement per page."""
    entity = stmt.column_descriptions[0]["entity"]
    ident = entity.id
    if request.after is not None:
        at, row_id = decode(request.after)
        pair, bound = tuple_(order, ident), tuple_(literal(at), literal(row_id))
        stmt = stmt.where(pair < bound if descending else pair > bound)
    ordering = (order.desc(), ident.desc()) if descending else (order, ident)
    rows = session.scalars(stmt.order_by(*ordering).limit(request.first + 1)).all()
    return of_rows(rows, request.first, lambda r: encode(getattr(r, order.key), r.id))


def of_rows(rows: Sequence[T], first: int, cursor: Callable[[T], str]) -> Page[T]:
    """A page from rows read one past `first`, the extra row saying that more follow."""
    return Page([Edge(cursor(r), r) for r in rows[:first]], len(rows) > first)
