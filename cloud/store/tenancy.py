"""Tenancy, enforced in one place: every ORM statement on a session is scoped here.

A session carries the set of tenants its principal may see (`scope_session`). Every ORM
SELECT, UPDATE and DELETE gets `tenant_id IN (scope)` on every tenant-owned class it touches,
and every flushed insert, change or deletion of a tenant-owned row, and every row of a bulk
INSERT, must fall inside the scope.
A session with no scope refuses such statements outright, and so does any raw SQL: the only
way around the scope is `unscoped(session, reason)`, which needs a reason and is easy to grep
(`make unscoped` lists its uses).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria

from .models import Tenant, TenantOwned

log = logging.getLogger(__name__)

_SCOPE = "dockyard.tenant_scope"
_UNSCOPED = "dockyard.unscoped_depth"


class TenantScopeError(RuntimeError):
    """A statement on tenant-owned data ran without a tenant scope, or outside it."""


def scope_session(session: Session, tenant_ids: Iterable[uuid.UUID]) -> Session:
    """Limit `session` to the given tenants; an empty scope sees nothing."""
    session.info[_SCOPE] = tuple(sorted(set(tenant_ids)))
    return session


def session_scope(session: Session) -> tuple[uuid.UUID, ...] | None:
    scope = session.info.get(_SCOPE)
    return scope if isinstance(scope, tuple) else None


def admit_new_child(session: Session, tenant: Tenant) -> None:
    """A child tenant being created (added, not yet flushed, its id set) under a parent in
    the session's scope joins the scope, so what the same transaction writes about it (its
    audit record) passes the checks. Only a new child qualifies: an existing tenant never
    widens a scope, and a top-level tenant is created only unscoped."""
    scope = session_scope(session)
    if scope is None or tenant not in session.new or tenant.id is None:
        raise TenantScopeError("only a new tenant, its id set, joins a scoped session")
    if tenant.parent_id not in scope:
        raise TenantScopeError("a new tenant's parent is outside the tenant scope")
    session.info[_SCOPE] = tuple(sorted({*scope, tenant.id}))


@contextmanager
def unscoped(session: Session, reason: str) -> Iterator[Session]:
    """Run statements that must cross tenants (an unauthenticated lookup by a secret's hash,
    a sweeper over all agents). `reason` says why; it is logged."""
    if not reason.strip():
        raise ValueError("unscoped() needs a reason")
    log.debug("unscoped: %s", reason)
    session.info[_UNSCOPED] = session.info.get(_UNSCOPED, 0) + 1
    try:
        yield session
    finally:
        session.info[_UNSCOPED] -= 1


def _is_unscoped(session: Session) -> bool:
    return bool(session.info.get(_UNSCOPED, 0))


def _tenant_mappers(state: ORMExecuteState) -> list[type[Any]]:
    return [m.class_ for m in state.all_mappers if issubclass(m.class_, TenantOwned | Tenant)]


def _filter_statements(state: ORMExecuteState) -> None:
    session = state.session
    if _is_unscoped(session):
        return
    if not state.is_orm_statement:
        raise TenantScopeError("raw SQL on a scoped session: wrap it in unscoped(session, reason)")
    scope = session_scope(session)
    if scope is None:
        if _tenant_mappers(state):
            raise TenantScopeError("tenant-owned data queried without a tenant scope")
        return
    if state.is_insert:
        _check_insert(state, scope)
        return
    ids = list(scope)
    state.statement = state.statement.options(
        with_loader_criteria(TenantOwned, lambda cls: cls.tenant_id.in_(ids), include_aliases=True),
        with_loader_criteria(Tenant, lambda cls: cls.id.in_(ids), include_aliases=True),
    )


def _check_insert(state: ORMExecuteState, scope: tuple[uuid.UUID, ...]) -> None:
    """A bulk INSERT (`session.execute(insert(Model), rows)`) skips the flush, so its rows
    are checked here, one by one. Values written into the statement itself cannot be seen
    as rows, so for tenant-owned classes they are refused."""
    if not _tenant_mappers(state):
        return
    if any(cls is Tenant for cls in _tenant_mappers(state)):
        raise TenantScopeError("tenants are created through the session, not in bulk")
    rows = state.parameters
    if (
        not rows
        or getattr(state.statement, "_values", None)
        or getattr(state.statement, "_multi_values", None)
    ):
        raise TenantScopeError("a bulk insert of tenant-owned rows passes them as parameters")
    each: Sequence[Mapping[str, Any]] = [rows] if isinstance(rows, Mapping) else rows
    _inside(scope, (row.get("tenant_id") for row in each))


def check_insert_tenants(
    session: Session, model: type[Any], tenant_ids: Callable[[], Iterable[Any]]
) -> None:
    """For a store function that writes rows of `model` in a statement this module cannot
    read rows from (an INSERT from arrays): the same rules as for a bulk INSERT. Tenants
    are never inserted so; a tenant-owned row's tenant (`tenant_ids()`, one per row) must
    lie in the session's scope. The statement itself then runs unscoped."""
    if _is_unscoped(session):
        return
    if issubclass(model, Tenant):
        raise TenantScopeError("tenants are created through the session, not in bulk")
    if not issubclass(model, TenantOwned):
        return
    scope = session_scope(session)
    if scope is None:
        raise TenantScopeError("tenant-owned rows inserted without a tenant scope")
    _inside(scope, tenant_ids())


def claim_scope(session: Session) -> tuple[uuid.UUID, ...] | None:
    """For a store function whose statement learns the tenant of the rows it writes only
    as it runs (`db.claim_and_insert`: the tenant of the agent it claims): the tenants the
    statement must restrict that claim to, or None inside `unscoped`. A session with no
    scope is refused, as for any write of tenant-owned rows."""
    if _is_unscoped(session):
        return None
    scope = session_scope(session)
    if scope is None:
        raise TenantScopeError("tenant-owned rows inserted without a tenant scope")
    return scope


def _inside(scope: tuple[uuid.UUID, ...], tenant_ids: Iterable[Any]) -> None:
    for tenant_id in tenant_ids:
        if tenant_id not in scope:
            raise TenantScopeError("a bulk-inserted row is outside the tenant scope")


def _check_flush(session: Session, _ctx: Any, _instances: Any) -> None:
    if _is_unscoped(session):
        return
    scope = session_scope(session)
    for obj in (*session.new, *session.dirty, *session.deleted):
        tenant_id: uuid.UUID | None
        if isinstance(obj, TenantOwned):
            tenant_id = obj.tenant_id
        elif isinstance(obj, Tenant):
            tenant_id = obj.id if obj not in session.new else obj.parent_id
            if obj in session.new and tenant_id is None:
                raise TenantScopeError("a top-level tenant is created only unscoped")
        else:
            continue
        if scope is None:
            raise TenantScopeError(f"{type(obj).__name__} written without a tenant scope")
        if tenant_id not in scope:
            raise TenantScopeError(f"{type(obj).__name__} written outside the tenant scope")


def install(session_class: type[Session]) -> None:
    """Attach the scoping to every session of `session_class`."""
    event.listen(session_class, "do_orm_execute", _filter_statements)
    event.listen(session_class, "before_flush", _check_flush)
