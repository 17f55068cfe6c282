"""Engines and sessions for PostgreSQL (production) and SQLite (the embedded default).

Dialect differences live here and nowhere else. A commit that changed an agent's sequence
wakes that agent's held poll: on PostgreSQL by NOTIFY inside the same transaction (so a
rolled-back change wakes no one and every replica hears it), on SQLite by calling the
in-process bus once the commit is done.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Engine,
    Row,
    Select,
    Table,
    Text,
    Uuid,
    and_,
    any_,
    bindparam,
    create_engine,
    event,
    exc,
    func,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from .models import Agent, Base
from .tenancy import check_insert_tenants, claim_scope, install, scope_session, unscoped

NOTIFY_CHANNEL = "dockyard_agents"
# Agent ids per NOTIFY, comma-separated: 200 x 37 bytes stays under PostgreSQL's 8000-byte
# payload limit, and a burst to many agents costs a few notifications, not one each.
NOTIFY_BATCH = 200
_WAKE = "dockyard.wake"
# A pooled connection idle this long is pinged before use; one back from work more recently
# is trusted. SQLAlchemy's pre-ping would ping every checkout: a round trip on each of the
# three transactions of a delivery (issue, the woken poll's read, the ack).
PING_IDLE_S = 1.0


class ScopedSession(Session):
    """The one session class of the cloud; tenant scoping is installed on it."""


install(ScopedSession)


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    # Overflow is slack for GraphQL sessions held across a request's steps; agent requests
    # stay within pool_size (Services.db_slots).
    engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size)
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection before use only if it sat idle PING_IDLE_S or more.

    A connection that was fine a moment ago is dead only if the server went away in that
    moment; then its first statement fails, SQLAlchemy sees the disconnect and empties the
    pool, as it would for a connection lost mid-transaction. A failed ping raises
    DisconnectionError, on which the pool drops the connection and checks out another."""

    @event.listens_for(engine, "connect")
    def _fresh(_dbapi: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _back(_dbapi: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _out(dbapi: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is not None and time.monotonic() - since < PING_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi)
        except Exception as e:
            raise exc.DisconnectionError(f"pooled connection failed its ping: {e}") from e


class Database:
    """The engine, its session factory and the wake-up hook for committed sequence changes."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        self.on_wake: Callable[[set[uuid.UUID]], None] | None = None
        self._factory = sessionmaker(self.engine, class_=ScopedSession, expire_on_commit=False)
        event.listen(self._factory, "before_commit", self._notify_before_commit)
        event.listen(self._factory, "after_commit", self._wake_after_commit)
        event.listen(self._factory, "after_rollback", self._forget_wakes)

    def session(self, tenant_ids: Iterable[uuid.UUID] | None = None) -> ScopedSession:
        session = self._factory()
        if tenant_ids is not None:
            scope_session(session, tenant_ids)
        return session

    def reader(self) -> ScopedSession:
        """An unscoped session whose statements each run on their own, outside any
        transaction: for reads that need no consistent snapshot across statements, such as
        resolving a bearer token, it saves the BEGIN and the ROLLBACK round trips."""
        session = self._factory()
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        return session

    @contextmanager
    def transaction(self, tenant_ids: Iterable[uuid.UUID] | None = None) -> Iterator[Session]:
        """A session that commits when the block ends and rolls back on an exception."""
        with self.session(tenant_ids) as session, session.begin():
            yield session

    def _notify_before_commit(self, session: Session) -> None:
        """The wake-ups no statement of the transaction carried yet (`insert_together`
        carries those of the agents it writes entries for), in one statement."""
        if not self.is_postgres:
            return
        agents = session.info.get(_WAKE)
        if not agents:
            return
        with unscoped(session, "NOTIFY carries only agent ids to the wake-up bus"):
            session.execute(_NOTIFY, {"notify_payloads": notify_payloads(agents)})

    def _wake_after_commit(self, session: Session) -> None:
        agents = session.info.pop(_WAKE, None)
        if agents and not self.is_postgres and self.on_wake is not None:
            self.on_wake(set(agents))

    def _forget_wakes(self, session: Session) -> None:
        session.info.pop(_WAKE, None)

    def dispose(self) -> None:
        self.engine.dispose()


def outerjoin_windows(
    session: Session,
    stmt: Select[Any],
    agent: InstrumentedAttribute[uuid.UUID],
    entries: type[Base],
    entry_agent: InstrumentedAttribute[uuid.UUID],
    entry_seq: InstrumentedAttribute[int],
    after: dict[uuid.UUID, int],
    span: int,
) -> Select[Any]:
    """`stmt`, which selects from the agents' table (`agent` its id), narrowed to the agents
    named in `after` and outer-joined to the `entries` whose (agent, seq) lies in
    (after[agent], after[agent] + span]: each agent comes back once per entry in its
    window, or once with NULL entry columns. On PostgreSQL the windows are a join
    against two arrays (`unnest`): two parameters and one plan whatever their number (an
    OR of one range per agent took 13 ms for 200 agents against 4 ms so, mostly sending
    and binding 600 parameters). SQLite has no arrays, and gets an IN list and the OR."""
    if session.get_bind().dialect.name == "postgresql":
        ids = bindparam("window_agents", list(after), type_=ARRAY(Uuid()))
        starts = bindparam("window_starts", list(after.values()), type_=ARRAY(BigInteger()))
        windows = func.unnest(ids, starts).table_valued("agent_id", "after").render_derived()
        within = and_(entry_seq > windows.c.after, entry_seq <= windows.c.after + span)
        # The agents also by `= ANY(ids)`, so they are found by their key whatever the
        # planner thinks of the tenant's size (a fresh table's statistics made it hash
        # every agent of the tenant).
        stmt = stmt.join(windows, agent == windows.c.agent_id).where(agent == any_(ids))
    else:
        stmt = stmt.where(agent.in_(list(after)))
        within = or_(
            *(and_(agent == a, entry_seq > n, entry_seq <= n + span) for a, n in after.items())
        )
    return stmt.outerjoin(entries, and_(entry_agent == agent, within))


@dataclass
class Rows:
    """Rows of one table for `insert_together`: the columns that differ from row to row,
    as one list each, and the ones all rows share."""

    model: type[Base]
    varying: dict[str, list[Any]]
    shared: dict[str, Any]
    claimed: dict[str, str] = field(default_factory=dict)
    """Columns that take the claimed agent's values (`claim_and_insert`): column name to
    the claim's column (`id`, `tenant_id`, `revoked_at`, `last_seq`)."""

    def count(self) -> int:
        return len(next(iter(self.varying.values())))

    def claiming(self, **columns: str) -> Rows:
        """These rows with `columns` (e.g. `tenant_id="tenant_id"`, `seq="last_seq"`)
        taken from the claimed agent instead of their own values."""
        varying = {k: v for k, v in self.varying.items() if k not in columns}
        shared = {k: v for k, v in self.shared.items() if k not in columns}
        return Rows(self.model, varying, shared, self.claimed | columns)

    def with_claim(self, claim: Row[Any]) -> Rows:
        """The claimed columns filled in from the claim's row."""
        taken = {k: getattr(claim, src) for k, src in self.claimed.items()}
        return Rows(self.model, self.varying, self.shared | taken)

    def dicts(self) -> list[dict[str, Any]]:
        names = list(self.varying)
        return [
            dict(zip(names, values, strict=True)) | self.shared
            for values in zip(*self.varying.values(), strict=True)
        ]

    def tenant_ids(self) -> list[Any]:
        if "tenant_id" in self.varying:
            return self.varying["tenant_id"]
        return [self.shared.get("tenant_id")] * self.count()


def insert_together(session: Session, tables: list[Rows]) -> None:
    """Insert rows into several tables as one statement where the database allows it.

    Issuing commands writes a job, a command and a sequence entry per agent. As bulk
    INSERTs that is three executemanys, which psycopg pipelines as one statement per row:
    600 statements for a burst to 200 agents, and three round trips for one command. On
    PostgreSQL each table's rows are instead selected from arrays (`unnest`), one
    parameter per column whatever the number of rows, and the tables are written by one
    statement through data-modifying CTEs. Those run on one snapshot and do not see each
    other's rows, so no table written together may reference another's new rows by a
    foreign key. SQLite gets the bulk INSERTs, with their rows checked by the session's
    scoping; on PostgreSQL the tenancy module checks the same rules first."""
    tables = [t for t in tables if t.count()]
    if not tables:
        return
    if session.get_bind().dialect.name != "postgresql":
        for t in tables:
            session.execute(insert(t.model), t.dicts())
        return
    for t in tables:
        check_insert_tenants(session, t.model, t.tenant_ids)
    layout = tuple((t.model, tuple(t.varying), tuple(t.shared)) for t in tables)
    stmt = _TOGETHER.get(layout)
    if stmt is None:
        # Built once per layout: constructing and caching the statement anew cost more
        # of the interpreter than the rest of issuing a command.
        stmt = _notify_rows([_insert_from_arrays(t, i) for i, t in enumerate(tables)])
        if len(_TOGETHER) >= 64:
            _TOGETHER.clear()
        _TOGETHER[layout] = stmt
    params = _params(tables)
    # The wake-ups asked for so far ride in the same statement (`_notify_rows`), which
    # saves the transaction a round trip at commit: NOTIFY is delivered at commit wherever
    # in the transaction it was sent, and not at all if it rolls back.
    params["notify_payloads"] = notify_payloads(session.info.pop(_WAKE, None) or ())
    with unscoped(session, "rows checked against the scope by insert_together"):
        session.execute(stmt, params)


_TOGETHER: dict[tuple[Any, ...], Any] = {}


def _params(tables: list[Rows]) -> dict[str, Any]:
    return {
        f"t{i}_{name}": value
        for i, t in enumerate(tables)
        for name, value in (t.varying | t.shared).items()
    }


def notify_payloads(agents: Iterable[uuid.UUID]) -> list[str]:
    """The agent ids of a wake-up, comma-separated, in payloads of NOTIFY_BATCH."""
    ids = sorted(str(a) for a in agents)
    return [",".join(ids[i : i + NOTIFY_BATCH]) for i in range(0, len(ids), NOTIFY_BATCH)]


def _notify_rows(ctes: list[Any]) -> Any:
    """The statement `insert_together` runs: its INSERTs as data-modifying CTEs (which
    PostgreSQL runs whether or not anything reads them) under a SELECT that sends one
    NOTIFY per payload of `notify_payloads` (none for an empty list)."""
    payload = func.unnest(bindparam("notify_payloads", type_=ARRAY(Text())))
    return select(func.pg_notify(NOTIFY_CHANNEL, payload)).add_cte(
        *(c.cte(f"rows_{i}") for i, c in enumerate(ctes))
    )


_NOTIFY = _notify_rows([])


def _insert_from_arrays(t: Rows, n: int, claim: Any = None) -> Any:
    """INSERT ... SELECT FROM unnest(arrays), with a named parameter per column, and the
    claimed columns from the `claim` CTE (one row, or none: then nothing is inserted)."""
    table = cast(Table, t.model.__table__)
    names = list(t.varying)
    arrays = [bindparam(f"t{n}_{k}", type_=ARRAY(table.c[k].type)) for k in names]
    rows = func.unnest(*arrays).table_valued(*names).render_derived()
    shared = [bindparam(f"t{n}_{k}", type_=table.c[k].type).label(k) for k in t.shared]
    taken = [claim.c[src].label(k) for k, src in t.claimed.items()]
    source = select(*(rows.c[k] for k in names), *shared, *taken)
    if taken:
        source = source.select_from(rows).join(claim, true())
    return insert(table).from_select([*names, *t.shared, *t.claimed], source)


_AGENTS = cast(Table, Agent.__table__)
# The agent's next sequence number, with what a caller checks before keeping it. Built
# once: an ORM UPDATE costs more to construct than to run. Nothing is synchronised with
# the session; the caller uses the returned row, not a loaded Agent.
CLAIM = (
    update(Agent)
    .where(Agent.id == bindparam("claimed_agent"))
    .values(last_seq=Agent.last_seq + 1)
    .returning(Agent.id, Agent.tenant_id, Agent.revoked_at, Agent.last_seq)
    .execution_options(synchronize_session=False)
)


def claim_and_insert(session: Session, agent_id: uuid.UUID, tables: list[Rows]) -> Row[Any] | None:
    """Take `agent_id`'s next sequence number (`CLAIM`'s row: id, tenant, revocation,
    number) and insert `tables`, whose `claimed` columns take the agent's values; None,
    and nothing written, if the agent is not found within the session's tenant scope.
    The caller checks the row afterwards and, refusing, rolls the whole back.

    On PostgreSQL one statement: the claim's UPDATE ... RETURNING, restricted to the
    session's tenants (`tenancy.claim_scope`), is a CTE the INSERTs select from, so an
    agent outside the scope yields no rows anywhere; the wake-ups ride along as in
    `insert_together`. Issuing a command so is BEGIN, this statement, COMMIT. Elsewhere the
    claim (scoped by the session's hook) runs first, then `insert_together`."""
    tables = [t for t in tables if t.count()]
    if session.get_bind().dialect.name != "postgresql":
        claim = session.execute(CLAIM, {"claimed_agent": agent_id}).one_or_none()
        if claim is not None:
            insert_together(session, [t.with_claim(claim) for t in tables])
        return claim
    scope = claim_scope(session)
    for t in tables:
        if "tenant_id" not in t.claimed:
            check_insert_tenants(session, t.model, t.tenant_ids)
    layout = (
        scope is not None,
        tuple((t.model, tuple(t.varying), tuple(t.shared), tuple(t.claimed)) for t in tables),
    )
    stmt = _CLAIMING.get(layout)
    if stmt is None:
        stmt = _claim_statement(tables, scoped=scope is not None)
        if len(_CLAIMING) >= 64:
            _CLAIMING.clear()
        _CLAIMING[layout] = stmt
    params = _params(tables) | {"claimed_agent": agent_id, "claim_scope": list(scope or ())}
    params["notify_payloads"] = notify_payloads(session.info.pop(_WAKE, None) or ())
    with unscoped(session, "the claim keeps to the session's tenants; rows take its tenant"):
        return session.execute(stmt, params).one_or_none()


_CLAIMING: dict[tuple[Any, ...], Any] = {}


def _claim_statement(tables: list[Rows], *, scoped: bool) -> Any:
    agents = _AGENTS
    where = [agents.c.id == bindparam("claimed_agent", type_=Uuid())]
    if scoped:
        where.append(agents.c.tenant_id == any_(bindparam("claim_scope", type_=ARRAY(Uuid()))))
    claim = (
        update(agents)
        .where(*where)
        .values(last_seq=agents.c.last_seq + 1)
        .returning(agents.c.id, agents.c.tenant_id, agents.c.revoked_at, agents.c.last_seq)
        .cte("claimed")
    )
    ctes = [_insert_from_arrays(t, i, claim).cte(f"rows_{i}") for i, t in enumerate(tables)]
    payload = func.unnest(bindparam("notify_payloads", type_=ARRAY(Text())))
    notified = select(func.count()).select_from(
        select(func.pg_notify(NOTIFY_CHANNEL, payload).label("sent")).subquery()
    )
    return select(
        claim.c.id,
        claim.c.tenant_id,
        claim.c.revoked_at,
        claim.c.last_seq,
        notified.scalar_subquery().label("notified"),
    ).add_cte(claim, *ctes)


def wake_agent(session: Session, agent_id: uuid.UUID) -> None:
    """Ask that `agent_id`'s held poll be woken once this transaction commits."""
    session.info.setdefault(_WAKE, set()).add(agent_id)
