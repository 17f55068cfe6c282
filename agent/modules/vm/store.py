"""The VM module's own SQLite file: inventory, sample history, decisions, notices, the
"never act" list. It survives restarts, so 90 days of history are not lost to a reboot.

The sample history is compact on purpose: one row per VM, day and signal holding the day's
peak and how many samples were seen, not every sample. Idleness asks "did every sample stay
under the threshold, and were there enough of them", and a peak plus a count answers both;
90 days of 500 VMs over four signals is 180,000 small rows.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ...migrations import Schema, upgrade
from ...protocol.vm import Decision, Identifiers, Signal
from .drivers.base import DatastoreInfo, HostInfo, Inventory, Sample, VmInfo

# Step 1 is the shape vm.sqlite had in the VM module's first release (c551861 to d6692d2);
# step 2 the safety net's tables (budget buckets, actions, audit, sent records: 4fc2dd0);
# step 3 each VM's life state and the archive and restore journal (issue 17); step 4 where
# a restore writes disks it moves to another datastore.
# Both are `IF NOT EXISTS`, so they adopt either unversioned shape. Add steps after them,
# never edit one (see agent/migrations.py).
SCHEMA = Schema(
    steps=(
        """
CREATE TABLE IF NOT EXISTS vms (
    endpoint TEXT NOT NULL,
    native_id TEXT NOT NULL,
    name TEXT NOT NULL,
    power_state TEXT NOT NULL,
    host TEXT,
    record TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    last_active_at TEXT,
    off_since TEXT,
    gone_at TEXT,
    quiet_from TEXT,
    evaluation TEXT,
    PRIMARY KEY (endpoint, native_id)
);
CREATE TABLE IF NOT EXISTS places (
    endpoint TEXT NOT NULL,
    kind TEXT NOT NULL,
    native_id TEXT NOT NULL,
    record TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    PRIMARY KEY (endpoint, kind, native_id)
);
CREATE TABLE IF NOT EXISTS days (
    endpoint TEXT NOT NULL,
    native_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    signal TEXT NOT NULL,
    peak REAL NOT NULL,
    samples INTEGER NOT NULL,
    PRIMARY KEY (endpoint, native_id, day, signal)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS decisions (
    decision_id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    native_id TEXT NOT NULL,
    state TEXT NOT NULL,
    at TEXT NOT NULL,
    document TEXT NOT NULL,
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS decisions_by_vm ON decisions (endpoint, native_id, at);
CREATE TABLE IF NOT EXISTS notices (
    notice_id TEXT PRIMARY KEY,
    decision_id TEXT NOT NULL UNIQUE,
    endpoint TEXT NOT NULL,
    native_id TEXT NOT NULL,
    recipient TEXT,
    sent_at TEXT,
    due_at TEXT NOT NULL,
    answer TEXT,
    answered_at TEXT,
    acted_at TEXT,
    error TEXT
);
CREATE TABLE IF NOT EXISTS used_links (
    nonce TEXT PRIMARY KEY,
    used_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS never_act (
    endpoint TEXT NOT NULL,
    vm TEXT NOT NULL,
    reason TEXT NOT NULL,
    added_at TEXT NOT NULL,
    PRIMARY KEY (endpoint, vm)
);
CREATE TABLE IF NOT EXISTS marks (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
""",
        """
CREATE TABLE IF NOT EXISTS buckets (
    endpoint TEXT NOT NULL,
    native_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    signal TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (endpoint, native_id, day, signal, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    native_id TEXT NOT NULL,
    action TEXT NOT NULL,
    paid_by TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS actions_by_time ON actions (at);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sent_records (
    endpoint TEXT NOT NULL,
    native_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (endpoint, native_id)
);
""",
        """
CREATE TABLE life (
    endpoint TEXT NOT NULL,
    native_id TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    since TEXT NOT NULL,
    record TEXT,
    PRIMARY KEY (endpoint, native_id)
);
CREATE TABLE archive_jobs (
    endpoint TEXT NOT NULL,
    native_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('archive', 'restore')),
    step TEXT NOT NULL,
    started_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    snapshot TEXT,
    manifest TEXT,
    placement TEXT,
    stored_bytes INTEGER,
    done TEXT,
    requested_by TEXT,
    PRIMARY KEY (endpoint, native_id)
);
""",
        """
ALTER TABLE archive_jobs ADD COLUMN relocated TEXT;
""",
    )
)

BUCKETS_PER_DECADE = 8
ZERO_BUCKET = -(10**6)
"""Samples of exactly 0 (a counter that did not move) have a bucket of their own."""


def bucket_of(value: float) -> int:
    """A sample's bucket: eight per decade, so a percentile read back from the buckets is
    at most a third above the true one, never below it (never "more idle" than it was)."""
    if value <= 0:
        return ZERO_BUCKET
    return math.floor(BUCKETS_PER_DECADE * math.log10(value))


def bucket_top(bucket: int) -> float:
    return 0.0 if bucket == ZERO_BUCKET else float(10 ** ((bucket + 1) / BUCKETS_PER_DECADE))


DAY_S = 86_400
HOST_PREFIX = "host:"
"""Physical hosts live beside the VMs (same history, notices and safety net), marked so."""


def is_host(native_id: str) -> bool:
    return native_id.startswith(HOST_PREFIX)


SELECT_VMS = (
    "SELECT endpoint, record, first_seen, last_seen, last_active_at, off_since, gone_at,"
    " quiet_from, evaluation FROM vms"
)


def day_of(moment: datetime) -> int:
    return int(moment.timestamp() // DAY_S)


def day_start(day: int) -> datetime:
    return datetime.fromtimestamp(day * DAY_S, UTC)


@dataclass(frozen=True)
class StoredVm:
    endpoint: str
    vm: VmInfo
    first_seen: datetime
    last_seen: datetime
    last_active_at: datetime | None
    off_since: datetime | None
    gone_at: datetime | None
    quiet_from: datetime | None
    """Idleness is not counted before this moment (a "skip" answer starts the period again)."""
    evaluation: dict[str, Any] | None = None
    """The last idleness evaluation: state, window, signals, missing days, reasons."""


@dataclass(frozen=True)
class Notice:
    notice_id: str
    decision_id: str
    endpoint: str
    native_id: str
    recipient: str | None
    sent_at: datetime | None
    due_at: datetime
    answer: str | None
    answered_at: datetime | None
    acted_at: datetime | None
    error: str | None


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def vm_to_json(vm: VmInfo) -> str:
    return json.dumps(
        {
            "native_id": vm.native_id,
            "name": vm.name,
            "power_state": vm.power_state,
            "host": vm.host,
            "datastores": list(vm.datastores),
            "cpus": vm.cpus,
            "memory_mb": vm.memory_mb,
            "identifiers": vm.identifiers.model_dump(),
            "tags": vm.tags,
            "tools_running": vm.tools_running,
        },
        sort_keys=True,
    )


def vm_from_json(text: str) -> VmInfo:
    d = json.loads(text)
    return VmInfo(
        native_id=d["native_id"],
        name=d["name"],
        power_state=d["power_state"],
        host=d.get("host"),
        datastores=tuple(d.get("datastores", ())),
        cpus=int(d.get("cpus", 0)),
        memory_mb=int(d.get("memory_mb", 0)),
        identifiers=Identifiers.model_validate(d.get("identifiers", {})),
        tags=dict(d.get("tags", {})),
        tools_running=bool(d.get("tools_running", False)),
    )


class VmStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        upgrade(self._db, SCHEMA, path)
        self._lock = threading.RLock()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # --- inventory -----------------------------------------------------------------------

    def record_inventory(self, inventory: Inventory, now: datetime) -> tuple[int, int]:
        """Upserts what was seen; VMs of this endpoint not seen are marked gone. Returns
        (seen, newly gone)."""
        at = now.isoformat()
        with self.tx() as db:
            for vm in inventory.vms:
                db.execute(
                    "INSERT INTO vms (endpoint, native_id, name, power_state, host, record,"
                    " first_seen, last_seen, off_since) VALUES (?,?,?,?,?,?,?,?,?)"
                    " ON CONFLICT (endpoint, native_id) DO UPDATE SET name=excluded.name,"
                    " power_state=excluded.power_state, host=excluded.host,"
                    " record=excluded.record, last_seen=excluded.last_seen, gone_at=NULL,"
                    " off_since=CASE WHEN excluded.power_state='on' THEN NULL"
                    "  ELSE COALESCE(vms.off_since, excluded.off_since) END",
                    (
                        inventory.endpoint,
                        vm.native_id,
                        vm.name,
                        vm.power_state,
                        vm.host,
                        vm_to_json(vm),
                        at,
                        at,
                        None if vm.power_state == "on" else at,
                    ),
                )
            seen = {vm.native_id for vm in inventory.vms}
            stale = [
                r[0]
                for r in db.execute(
                    "SELECT native_id FROM vms WHERE endpoint=? AND gone_at IS NULL",
                    (inventory.endpoint,),
                )
                if r[0] not in seen
            ]
            db.executemany(
                "UPDATE vms SET gone_at=? WHERE endpoint=? AND native_id=?",
                [(at, inventory.endpoint, n) for n in stale],
            )
            db.execute("DELETE FROM places WHERE endpoint=?", (inventory.endpoint,))
            rows = [("host", h.native_id, json.dumps(h.__dict__), at) for h in inventory.hosts] + [
                ("datastore", d.native_id, json.dumps({**d.__dict__, "hosts": list(d.hosts)}), at)
                for d in inventory.datastores
            ]
            db.executemany(
                "INSERT INTO places (endpoint, kind, native_id, record, last_seen)"
                " VALUES (?,?,?,?,?)",
                [(inventory.endpoint, *r) for r in rows],
            )
        return len(seen), len(stale)

    def hosts(self, endpoint: str) -> list[HostInfo]:
        rows = self._rows(
            "SELECT record FROM places WHERE endpoint=? AND kind='host' ORDER BY native_id",
            endpoint,
        )
        return [HostInfo(**json.loads(r[0])) for r in rows]

    def datastores(self, endpoint: str) -> list[DatastoreInfo]:
        rows = self._rows(
            "SELECT record FROM places WHERE endpoint=? AND kind='datastore' ORDER BY native_id",
            endpoint,
        )
        out = []
        for (text,) in rows:
            d = json.loads(text)
            d["hosts"] = tuple(d.get("hosts", ()))
            out.append(DatastoreInfo(**d))
        return out

    def vms(
        self, endpoint: str | None = None, include_gone: bool = False, kind: str = "vm"
    ) -> list[StoredVm]:
        """`kind`: "vm", "host" (physical hosts, native ids `host:...`) or "all"."""
        sql = SELECT_VMS
        clauses, args = [], []
        if kind == "vm":
            clauses.append(f"native_id NOT LIKE '{HOST_PREFIX}%'")
        elif kind == "host":
            clauses.append(f"native_id LIKE '{HOST_PREFIX}%'")
        if endpoint is not None:
            clauses.append("endpoint=?")
            args.append(endpoint)
        if not include_gone:
            clauses.append("gone_at IS NULL")
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        return [self._stored(r) for r in self._rows(sql + " ORDER BY endpoint, name", *args)]

    def vm(self, endpoint: str, native_id: str) -> StoredVm | None:
        rows = self._rows(
            SELECT_VMS + " WHERE endpoint=? AND native_id=?",
            endpoint,
            native_id,
        )
        return self._stored(rows[0]) if rows else None

    def find(self, text: str) -> list[StoredVm]:
        """VMs whose native id or name is `text` (or `endpoint/native-id`)."""
        endpoint, sep, rest = text.partition("/")
        if sep:
            found = self.vm(endpoint, rest)
            if found is not None:
                return [found]
        rows = self._rows(
            SELECT_VMS + " WHERE native_id=? OR name=? ORDER BY endpoint",
            text,
            text,
        )
        return [self._stored(r) for r in rows]

    @staticmethod
    def _stored(row: tuple[Any, ...]) -> StoredVm:
        return StoredVm(
            endpoint=row[0],
            vm=vm_from_json(row[1]),
            first_seen=datetime.fromisoformat(row[2]),
            last_seen=datetime.fromisoformat(row[3]),
            last_active_at=_ts(row[4]),
            off_since=_ts(row[5]),
            gone_at=_ts(row[6]),
            quiet_from=_ts(row[7]),
            evaluation=json.loads(row[8]) if row[8] else None,
        )

    def mark_gone(self, endpoint: str, native_id: str, now: datetime) -> None:
        with self.tx() as db:
            db.execute(
                "UPDATE vms SET gone_at=? WHERE endpoint=? AND native_id=?",
                (now.isoformat(), endpoint, native_id),
            )

    def set_power(self, endpoint: str, native_id: str, state: str, now: datetime) -> None:
        with self.tx() as db:
            row = db.execute(
                "SELECT record FROM vms WHERE endpoint=? AND native_id=?", (endpoint, native_id)
            ).fetchone()
            if row is None:
                return
            record = json.loads(row[0])
            record["power_state"] = state
            db.execute(
                "UPDATE vms SET power_state=?, record=?, off_since=CASE WHEN ?='on' THEN NULL"
                " ELSE COALESCE(off_since, ?) END WHERE endpoint=? AND native_id=?",
                (
                    state,
                    json.dumps(record, sort_keys=True),
                    state,
                    now.isoformat(),
                    endpoint,
                    native_id,
                ),
            )

    def set_quiet_from(self, endpoint: str, native_id: str, moment: datetime) -> None:
        """The VM's first period starts again at `moment`. Its last evaluation judged days
        before that, so it goes too: kept, it would call the VM idle until the next pass."""
        with self.tx() as db:
            db.execute(
                "UPDATE vms SET quiet_from=?, evaluation=NULL WHERE endpoint=? AND native_id=?",
                (moment.isoformat(), endpoint, native_id),
            )

    def set_evaluations(self, rows: Iterable[tuple[str, str, datetime | None, str]]) -> None:
        """(endpoint, native_id, last active or None, evaluation JSON) for many VMs at once;
        a known last-active moment is never replaced by None."""
        with self.tx() as db:
            db.executemany(
                "UPDATE vms SET last_active_at=COALESCE(?, last_active_at), evaluation=?"
                " WHERE endpoint=? AND native_id=?",
                [(a.isoformat() if a else None, ev, e, n) for e, n, a, ev in rows],
            )

    def evaluation(self, endpoint: str, native_id: str) -> dict[str, Any] | None:
        rows = self._rows(
            "SELECT evaluation FROM vms WHERE endpoint=? AND native_id=?", endpoint, native_id
        )
        return json.loads(rows[0][0]) if rows and rows[0][0] else None

    # --- samples -------------------------------------------------------------------------

    def add_samples(self, endpoint: str, samples: Iterable[Sample]) -> int:
        rows = [
            (endpoint, s.native_id, day_of(s.at), signal.value, float(value))
            for s in samples
            for signal, value in s.values.items()
        ]
        with self.tx() as db:
            db.executemany(
                "INSERT INTO days (endpoint, native_id, day, signal, peak, samples)"
                " VALUES (?,?,?,?,?,1) ON CONFLICT (endpoint, native_id, day, signal)"
                " DO UPDATE SET peak=MAX(peak, excluded.peak), samples=samples+1",
                rows,
            )
            db.executemany(
                "INSERT INTO buckets (endpoint, native_id, day, signal, bucket, n)"
                " VALUES (?,?,?,?,?,1) ON CONFLICT (endpoint, native_id, day, signal, bucket)"
                " DO UPDATE SET n=n+1",
                [(e, n, d, sig, bucket_of(v)) for e, n, d, sig, v in rows],
            )
        return len(rows)

    def quantiles(
        self, endpoint: str, first_day: int, last_day: int, wanted: dict[Signal, float]
    ) -> dict[str, dict[int, dict[Signal, float]]]:
        """Per VM and day, the `wanted` quantile of each signal's samples (0.95 for p95),
        read from the buckets as the bucket's top, so never under the true figure. A day
        sampled before buckets were kept has none: its peak stands."""
        if not wanted:
            return {}
        marks = ",".join("?" for _ in wanted)
        counts: dict[tuple[str, int, Signal], list[tuple[int, int]]] = {}
        for native_id, day, signal, bucket, n in self._rows(
            "SELECT native_id, day, signal, bucket, n FROM buckets WHERE endpoint=?"  # noqa: S608 - placeholders only
            f" AND day BETWEEN ? AND ? AND signal IN ({marks})"
            " ORDER BY native_id, day, signal, bucket",
            endpoint,
            first_day,
            last_day,
            *[s.value for s in wanted],
        ):
            counts.setdefault((native_id, int(day), Signal(signal)), []).append(
                (int(bucket), int(n))
            )
        out: dict[str, dict[int, dict[Signal, float]]] = {}
        for (native_id, day, signal), spread in counts.items():
            total = sum(n for _, n in spread)
            rank = math.ceil(wanted[signal] * total)
            seen = 0
            for bucket, n in spread:
                seen += n
                if seen >= rank:
                    out.setdefault(native_id, {}).setdefault(day, {})[signal] = bucket_top(bucket)
                    break
        return out

    def history(
        self, endpoint: str, native_id: str, first_day: int, last_day: int
    ) -> dict[int, dict[Signal, tuple[float, int]]]:
        """Per day: each signal's (peak, sample count), for days first_day..last_day."""
        out: dict[int, dict[Signal, tuple[float, int]]] = {}
        for day, signal, peak, count in self._rows(
            "SELECT day, signal, peak, samples FROM days WHERE endpoint=? AND native_id=?"
            " AND day BETWEEN ? AND ?",
            endpoint,
            native_id,
            first_day,
            last_day,
        ):
            out.setdefault(int(day), {})[Signal(signal)] = (float(peak), int(count))
        return out

    def histories(
        self, endpoint: str, first_day: int, last_day: int
    ) -> dict[str, dict[int, dict[Signal, tuple[float, int]]]]:
        """`history` for every VM of an endpoint in one read (the evaluation pass)."""
        out: dict[str, dict[int, dict[Signal, tuple[float, int]]]] = {}
        for native_id, day, signal, peak, count in self._rows(
            "SELECT native_id, day, signal, peak, samples FROM days WHERE endpoint=?"
            " AND day BETWEEN ? AND ?",
            endpoint,
            first_day,
            last_day,
        ):
            out.setdefault(native_id, {}).setdefault(int(day), {})[Signal(signal)] = (
                float(peak),
                int(count),
            )
        return out

    def forget_before(self, day: int) -> int:
        with self.tx() as db:
            db.execute("DELETE FROM buckets WHERE day < ?", (day,))
            return db.execute("DELETE FROM days WHERE day < ?", (day,)).rowcount

    # --- decisions and notices -----------------------------------------------------------

    def record_decision(self, decision: Decision, outcome: str | None = None) -> None:
        with self.tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO decisions (decision_id, endpoint, native_id, state, at,"
                " document, outcome) VALUES (?,?,?,?,?,?,?)",
                (
                    decision.decision_id,
                    decision.endpoint,
                    decision.native_id,
                    decision.state.value,
                    decision.window_end.isoformat(),
                    decision.model_dump_json(),
                    outcome,
                ),
            )

    def set_outcome(self, decision_id: str, outcome: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE decisions SET outcome=? WHERE decision_id=?", (outcome, decision_id))

    def decisions(
        self, endpoint: str, native_id: str, limit: int = 10
    ) -> list[tuple[Decision, str | None]]:
        rows = self._rows(
            "SELECT document, outcome FROM decisions WHERE endpoint=? AND native_id=?"
            " ORDER BY at DESC, rowid DESC LIMIT ?",
            endpoint,
            native_id,
            limit,
        )
        return [(Decision.model_validate_json(doc), outcome) for doc, outcome in rows]

    def with_outcome(self, outcome: str, limit: int = 5000) -> list[Decision]:
        rows = self._rows(
            "SELECT document FROM decisions WHERE outcome=? ORDER BY at LIMIT ?", outcome, limit
        )
        return [Decision.model_validate_json(r[0]) for r in rows]

    def decision(self, decision_id: str) -> tuple[Decision, str | None] | None:
        rows = self._rows(
            "SELECT document, outcome FROM decisions WHERE decision_id=?", decision_id
        )
        return (Decision.model_validate_json(rows[0][0]), rows[0][1]) if rows else None

    def add_notice(self, notice: Notice) -> None:
        with self.tx() as db:
            db.execute(
                "INSERT INTO notices (notice_id, decision_id, endpoint, native_id, recipient,"
                " sent_at, due_at) VALUES (?,?,?,?,?,?,?)",
                (
                    notice.notice_id,
                    notice.decision_id,
                    notice.endpoint,
                    notice.native_id,
                    notice.recipient,
                    notice.sent_at.isoformat() if notice.sent_at else None,
                    notice.due_at.isoformat(),
                ),
            )

    def update_notice(self, notice_id: str, **fields: Any) -> None:
        allowed = {"sent_at", "due_at", "answer", "answered_at", "acted_at", "error"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"notice fields are {sorted(allowed)}")
        values = [v.isoformat() if isinstance(v, datetime) else v for v in fields.values()]
        assignments = ", ".join(f"{name}=?" for name in fields)
        with self.tx() as db:
            db.execute(
                f"UPDATE notices SET {assignments} WHERE notice_id=?",  # noqa: S608 - names checked
                (*values, notice_id),
            )

    def notices(self, open_only: bool = False) -> list[Notice]:
        sql = (
            "SELECT notice_id, decision_id, endpoint, native_id, recipient, sent_at, due_at,"
            " answer, answered_at, acted_at, error FROM notices"
        )
        if open_only:
            sql += " WHERE acted_at IS NULL AND (answer IS NULL OR answer='delay')"
        return [self._notice(r) for r in self._rows(sql + " ORDER BY due_at")]

    def notice(self, notice_id: str) -> Notice | None:
        rows = self._rows(
            "SELECT notice_id, decision_id, endpoint, native_id, recipient, sent_at, due_at,"
            " answer, answered_at, acted_at, error FROM notices WHERE notice_id=?",
            notice_id,
        )
        return self._notice(rows[0]) if rows else None

    @staticmethod
    def _notice(r: tuple[Any, ...]) -> Notice:
        return Notice(
            notice_id=r[0],
            decision_id=r[1],
            endpoint=r[2],
            native_id=r[3],
            recipient=r[4],
            sent_at=_ts(r[5]),
            due_at=datetime.fromisoformat(r[6]),
            answer=r[7],
            answered_at=_ts(r[8]),
            acted_at=_ts(r[9]),
            error=r[10],
        )

    def use_nonce(self, nonce: str, now: datetime) -> bool:
        """True the first time a link's nonce is used, False on every replay."""
        try:
            with self.tx() as db:
                db.execute(
                    "INSERT INTO used_links (nonce, used_at) VALUES (?,?)",
                    (nonce, now.isoformat()),
                )
        except sqlite3.IntegrityError:
            return False
        return True

    # --- the never-act list and marks ----------------------------------------------------

    def never_act(self) -> dict[tuple[str, str], str]:
        return {
            (e, v): reason
            for e, v, reason in self._rows("SELECT endpoint, vm, reason FROM never_act")
        }

    def add_never_act(self, endpoint: str, vm: str, reason: str, now: datetime) -> None:
        with self.tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO never_act (endpoint, vm, reason, added_at)"
                " VALUES (?,?,?,?)",
                (endpoint, vm, reason, now.isoformat()),
            )

    def remove_never_act(self, endpoint: str, vm: str) -> bool:
        with self.tx() as db:
            return (
                db.execute(
                    "DELETE FROM never_act WHERE endpoint=? AND vm=?", (endpoint, vm)
                ).rowcount
                > 0
            )

    def mark(self, name: str) -> str | None:
        rows = self._rows("SELECT value FROM marks WHERE name=?", name)
        return str(rows[0][0]) if rows else None

    def set_mark(self, name: str, value: str) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO marks (name, value) VALUES (?,?)", (name, value))

    # --- the budget, approvals and the audit trail ---------------------------------------

    def reserve_action(
        self,
        endpoint: str,
        native_id: str,
        action: str,
        now: datetime,
        since: datetime,
        endpoints: list[str],
        budget: int,
    ) -> tuple[int, str] | None:
        """Counts the actions on `endpoints` since `since` and, in the same transaction,
        records this one if the budget (or else an approval) allows it: whichever process
        or thread asks, two never both take the last slot. Returns (action id, "budget" or
        "approval"), or None when neither is left."""
        marks = ",".join("?" for _ in endpoints) or "NULL"
        with self.tx() as db:
            used = db.execute(
                f"SELECT COUNT(*) FROM actions WHERE at >= ? AND endpoint IN ({marks})",  # noqa: S608
                (since.isoformat(), *endpoints),
            ).fetchone()[0]
            paid_by = "budget"
            if used >= budget:
                row = db.execute("SELECT value FROM marks WHERE name='approved_extra'").fetchone()
                approved = int(row[0]) if row else 0
                if approved <= 0:
                    return None
                db.execute(
                    "INSERT OR REPLACE INTO marks (name, value) VALUES ('approved_extra', ?)",
                    (str(approved - 1),),
                )
                paid_by = "approval"
            cursor = db.execute(
                "INSERT INTO actions (at, endpoint, native_id, action, paid_by) VALUES (?,?,?,?,?)",
                (now.isoformat(), endpoint, native_id, action, paid_by),
            )
            return int(cursor.lastrowid or 0), paid_by

    def release_action(self, action_id: int) -> None:
        """The power change failed: it did not happen, so it costs nothing (an approval it
        used is given back)."""
        with self.tx() as db:
            row = db.execute("SELECT paid_by FROM actions WHERE id=?", (action_id,)).fetchone()
            if row is None:
                return
            db.execute("DELETE FROM actions WHERE id=?", (action_id,))
            if row[0] == "approval":
                db.execute(
                    "INSERT INTO marks (name, value) VALUES ('approved_extra', '1')"
                    " ON CONFLICT (name) DO UPDATE SET value=CAST(value AS INTEGER)+1",
                )

    def actions_since(self, since: datetime, endpoints: list[str]) -> int:
        marks = ",".join("?" for _ in endpoints) or "NULL"
        rows = self._rows(
            f"SELECT COUNT(*) FROM actions WHERE at >= ? AND endpoint IN ({marks})",  # noqa: S608
            since.isoformat(),
            *endpoints,
        )
        return int(rows[0][0])

    def approvals(self) -> int:
        """The approvals left in the pool (each pays for one action past the budget)."""
        value = self.mark("approved_extra")
        return int(value) if value else 0

    def approve(self, count: int) -> int:
        """Adds `count` approvals to the pool; returns the pool."""
        with self.tx() as db:
            row = db.execute("SELECT value FROM marks WHERE name='approved_extra'").fetchone()
            pool = (int(row[0]) if row else 0) + count
            db.execute(
                "INSERT OR REPLACE INTO marks (name, value) VALUES ('approved_extra', ?)",
                (str(pool),),
            )
            return pool

    def add_audit(
        self, what: str, target: str | None, outcome: str, now: datetime, **detail: Any
    ) -> None:
        """One entry of the trail: `what` happened (`vm.power`, `vm.link`, `vm.approve`)."""
        with self.tx() as db:
            db.execute(
                "INSERT INTO audit (at, action, target, outcome, detail) VALUES (?,?,?,?,?)",
                (now.isoformat(), what, target, outcome, json.dumps(detail, sort_keys=True)),
            )

    def audits(self, unsent_only: bool = False, limit: int = 1000) -> list[dict[str, Any]]:
        sql = "SELECT id, at, action, target, outcome, detail FROM audit"
        if unsent_only:
            sql += " WHERE sent=0"
        rows = self._rows(sql + " ORDER BY id LIMIT ?", limit)
        return [
            {
                "id": r[0],
                "at": r[1],
                "action": r[2],
                "target": r[3],
                "outcome": r[4],
                "detail": json.loads(r[5]),
            }
            for r in rows
        ]

    def mark_audits_sent(self, ids: list[int]) -> None:
        with self.tx() as db:
            db.executemany("UPDATE audit SET sent=1 WHERE id=?", [(i,) for i in ids])

    # --- what the cloud was last sent ----------------------------------------------------

    def sent_digests(self) -> dict[tuple[str, str], str]:
        rows = self._rows("SELECT endpoint, native_id, digest FROM sent_records")
        return {(e, n): d for e, n, d in rows}

    def set_sent_digests(self, digests: dict[tuple[str, str], str], full: bool) -> None:
        """After a report went up: a full one replaces the record of what was sent."""
        with self.tx() as db:
            if full:
                db.execute("DELETE FROM sent_records")
            db.executemany(
                "INSERT OR REPLACE INTO sent_records (endpoint, native_id, digest) VALUES (?,?,?)",
                [(e, n, d) for (e, n), d in digests.items()],
            )
