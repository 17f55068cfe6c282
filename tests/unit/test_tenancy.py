"""Tenancy in one place: no statement on tenant-owned rows runs without a scope, and a
scope sees only its own tenants' rows."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import delete, insert, inspect, select, text, update

from dockyard.cloud.domain import agents, tenants
from dockyard.cloud.domain.errors import NotFound
from dockyard.cloud.domain.principal import Role
from dockyard.cloud.store.db import Database, Rows, insert_together
from dockyard.cloud.store.models import Base, Site, Tenant, TenantOwned
from dockyard.cloud.store.tenancy import TenantScopeError, unscoped

from ..factories import make_world, system

TENANT_CLASSES = sorted(
    (m.class_ for m in Base.registry.mappers if issubclass(m.class_, TenantOwned | Tenant)),
    key=lambda c: c.__name__,
)


def test_every_tenant_owned_table_has_a_tenant_column() -> None:
    owned = [c for c in TENANT_CLASSES if c is not Tenant]
    assert len(owned) >= 12
    for cls in owned:
        assert "tenant_id" in cls.__table__.c, cls.__name__


@pytest.mark.parametrize("cls", TENANT_CLASSES, ids=lambda c: c.__name__)
def test_unscoped_select_update_delete_raise(db: Database, cls: type) -> None:
    column = inspect(cls).primary_key[0]
    with db.session() as session:
        with pytest.raises(TenantScopeError):
            session.execute(select(cls)).all()
        with pytest.raises(TenantScopeError):
            session.execute(update(cls).where(column == column).values())
        with pytest.raises(TenantScopeError):
            session.execute(delete(cls).where(column != column))


def test_raw_sql_needs_the_escape_hatch(db: Database) -> None:
    with db.session([uuid.uuid4()]) as session:
        with pytest.raises(TenantScopeError):
            session.execute(text("SELECT 1"))
        with unscoped(session, "test of the escape hatch"):
            assert session.execute(text("SELECT 1")).scalar() == 1
        with pytest.raises(ValueError, match="reason"), unscoped(session, "  "):
            pass


def test_scope_filters_rows_and_refuses_foreign_writes(db: Database) -> None:
    a, b = make_world(db), make_world(db)
    with db.session([a.tenant_id]) as session:
        names = {s.tenant_id for s in session.scalars(select(Site))}
        assert names == {a.tenant_id}
        assert session.get(Tenant, b.tenant_id) is None
        assert session.get(Site, b.site_id) is None
        # An UPDATE aimed at the other tenant's row touches nothing.
        session.execute(update(Site).where(Site.id == b.site_id).values(name="stolen"))
        session.commit()
    with db.session([b.tenant_id]) as session:
        site = session.get(Site, b.site_id)
        assert site is not None
        assert site.name == "main"
    with db.session([a.tenant_id]) as session:
        session.add(Site(tenant_id=b.tenant_id, name="planted", created_at=site.created_at))
        with pytest.raises(TenantScopeError):
            session.flush()


def test_bulk_inserts_are_checked_row_by_row(db: Database) -> None:
    a, b = make_world(db), make_world(db)
    with db.session([a.tenant_id]) as session:
        site = session.get(Site, a.site_id)
        assert site is not None
        created = site.created_at

    def rows(*tenant_ids: uuid.UUID) -> list[dict[str, object]]:
        return [
            {"tenant_id": t, "name": f"bulk {i}", "created_at": created}
            for i, t in enumerate(tenant_ids)
        ]

    with db.session() as session, pytest.raises(TenantScopeError):
        session.execute(insert(Site), rows(a.tenant_id))
    with db.session([a.tenant_id]) as session:
        with pytest.raises(TenantScopeError, match="outside"):
            session.execute(insert(Site), rows(a.tenant_id, b.tenant_id))
        with pytest.raises(TenantScopeError, match="parameters"):
            session.execute(insert(Site).values(rows(b.tenant_id)[0]))
        with pytest.raises(TenantScopeError, match="parameters"):
            session.execute(insert(Site).values(name="x", created_at=created), rows(a.tenant_id))
    with db.session([a.tenant_id]) as session:
        session.execute(insert(Site), rows(a.tenant_id, a.tenant_id))
        session.commit()
    with db.session([a.tenant_id, b.tenant_id]) as session:
        bulk = session.scalars(select(Site).where(Site.name.like("bulk %"))).all()
        assert {s.tenant_id for s in bulk} == {a.tenant_id}
        assert len(bulk) == 2


def test_rows_inserted_together_are_checked_against_the_scope(db: Database) -> None:
    """`insert_together` writes from arrays on PostgreSQL, where the session's hook cannot
    see rows; it checks them itself, and on SQLite the hook checks its bulk INSERTs."""
    a, b = make_world(db), make_world(db)
    with db.session([a.tenant_id]) as session:
        site = session.get(Site, a.site_id)
        assert site is not None
        created = site.created_at

    def sites(first: int, *tenant_ids: uuid.UUID) -> Rows:
        names = [f"together {first + i}" for i in range(len(tenant_ids))]
        varying = {"id": [uuid.uuid4() for _ in names], "tenant_id": list(tenant_ids)}
        return Rows(Site, varying | {"name": names}, {"created_at": created})

    with db.session() as session, pytest.raises(TenantScopeError):
        insert_together(session, [sites(0, a.tenant_id)])
    with db.session([a.tenant_id]) as session, pytest.raises(TenantScopeError, match="outside"):
        insert_together(session, [sites(0, a.tenant_id), sites(1, b.tenant_id)])
    tenant = Rows(Tenant, {"id": [uuid.uuid4()], "parent_id": [a.tenant_id]}, {"name": "x"})
    with db.session([a.tenant_id]) as session, pytest.raises(TenantScopeError, match="bulk"):
        insert_together(session, [tenant])
    with db.session([a.tenant_id]) as session:
        insert_together(session, [sites(0, a.tenant_id, a.tenant_id), sites(2, a.tenant_id)])
        session.commit()
    with db.session([a.tenant_id, b.tenant_id]) as session:
        written = session.scalars(select(Site).where(Site.name.like("together %"))).all()
        assert sorted((s.tenant_id == a.tenant_id, s.name) for s in written) == [
            (True, "together 0"),
            (True, "together 1"),
            (True, "together 2"),
        ]


def test_another_tenants_id_is_not_found_like_a_missing_one(db: Database) -> None:
    a, b = make_world(db), make_world(db)
    with system(db, b.tenant_id) as ctx:
        with pytest.raises(NotFound) as foreign:
            tenants.get(ctx, a.tenant_id)
        with pytest.raises(NotFound) as missing:
            tenants.get(ctx, uuid.uuid4())
        assert str(foreign.value) == str(missing.value)
        with pytest.raises(NotFound) as foreign_agent:
            agents.get(ctx, a.site_id)
        assert str(foreign_agent.value) == "agent not found"


def test_msp_member_sees_children_but_not_other_msps(db: Database) -> None:
    a, b = make_world(db), make_world(db)
    with db.session() as session:
        principal = tenants.principal_for_user(session, a.user_id)
    assert {a.msp_id, a.tenant_id} <= principal.tenant_ids
    assert b.tenant_id not in principal.tenant_ids
    assert principal.direct[a.tenant_id] is Role.OWNER
    assert principal.via_msp[a.tenant_id] is Role.OWNER
