"""The domain's keyset pages on both dialects: a walk sees every row once, in order, ties
broken by id; cursors are opaque and checked; another tenant's rows never appear."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from dockyard.cloud.domain import pages, tenants
from dockyard.cloud.domain.errors import Invalid
from dockyard.cloud.domain.pages import PageRequest
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import AuditRecord

from ..factories import make_world, system


def _walk(fetch, first: int) -> tuple[list, int]:  # type: ignore[no-untyped-def]
    seen, after, pages_read = [], None, 0
    while True:
        page = fetch(PageRequest(first, after))
        pages_read += 1
        seen += page.items
        if not page.has_next:
            return seen, pages_read
        after = page.end_cursor


def test_a_walk_sees_every_row_once_in_order(db: Database) -> None:
    world = make_world(db)
    other = make_world(db)
    with system(db, world.tenant_id, other.tenant_id) as ctx:
        for name in ("e", "b", "d", "a", "c"):
            tenants.create_site(ctx, world.tenant_id, name, None)
        tenants.create_site(ctx, other.tenant_id, "b2", None)
        names, read = _walk(lambda r: tenants.sites(ctx, world.tenant_id, r), 2)
    assert [s.name for s in names] == ["a", "b", "c", "d", "e", "main"]
    assert read == 3


@pytest.mark.parametrize("descending", [False, True])
def test_ties_on_the_sort_key_are_broken_by_id(db: Database, descending: bool) -> None:
    world = make_world(db)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    with system(db, world.tenant_id) as ctx:
        for i in range(7):
            ctx.session.add(
                AuditRecord(
                    tenant_id=world.tenant_id,
                    at=at,
                    actor_kind="system",
                    action=f"tie.{i}",
                    outcome="ok",
                    detail={},
                )
            )
        ctx.session.flush()
        stmt = select(AuditRecord).where(AuditRecord.action.like("tie.%"))
        rows, _ = _walk(
            lambda r: pages.keyset(ctx.session, stmt, AuditRecord.at, r, descending=descending),
            3,
        )
    ids = [r.id for r in rows]
    assert len(ids) == len(set(ids)) == 7
    assert ids == sorted(ids, reverse=descending)


def test_cursors_and_sizes_are_checked(db: Database) -> None:
    world = make_world(db)
    with (
        system(db, world.tenant_id) as ctx,
        pytest.raises(Invalid, match="not one this API gave out"),
    ):
        tenants.sites(ctx, world.tenant_id, PageRequest(10, "bm90IGEgY3Vyc29y"))
    for first in (0, pages.MAX_FIRST + 1):
        with pytest.raises(Invalid, match="first is between"):
            PageRequest(first)
    cursor = pages.encode(datetime(2026, 1, 1, tzinfo=UTC), world.tenant_id)
    assert pages.decode(cursor) == (datetime(2026, 1, 1, tzinfo=UTC), world.tenant_id)
    assert pages.decode(pages.encode(7, world.tenant_id)) == (7, world.tenant_id)
