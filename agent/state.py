"""The agent's local state: one SQLite file in its state directory.

Links are keyed by name (one per control plane the agent docks with; today "default"), so
docking with several control planes later needs no new layout. The command journal lives in
`journal.py` on the same file. Writes are synchronous=FULL: the journal is what makes each
command's effect happen once across a kill -9.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import StateDamaged, StateUnusable
from .migrations import Schema, check_known, upgrade
from .protocol import FlowMode

DB_NAME = "agent.db"
# SQLite's result codes for a damaged file: SQLITE_CORRUPT and SQLITE_NOTADB.
_DAMAGE_CODES = {11, 26}

# Step 1 is the shape agent.db had before versions (unchanged since the agent's first
# release); add steps after it, never edit it (see migrations.py).
SCHEMA = Schema(
    steps=(
        """
CREATE TABLE IF NOT EXISTS links (
    name TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    site_id TEXT NOT NULL,
    token_url TEXT NOT NULL,
    key_file TEXT NOT NULL,
    max_flow TEXT NOT NULL,
    flow_mode TEXT NOT NULL,
    ca_bundle TEXT,
    last_seq INTEGER NOT NULL DEFAULT 0,
    docked_at TEXT NOT NULL,
    last_contact_at TEXT
);
CREATE TABLE IF NOT EXISTS journal (
    link TEXT NOT NULL,
    command_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    job_id TEXT NOT NULL,
    name TEXT NOT NULL,
    args TEXT NOT NULL,
    state TEXT NOT NULL,
    result_code TEXT,
    detail TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    reported INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS policies (
    link TEXT NOT NULL,
    policy_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (link, policy_id)
);
CREATE TABLE IF NOT EXISTS features (
    link TEXT NOT NULL,
    module TEXT NOT NULL,
    features TEXT NOT NULL,
    PRIMARY KEY (link, module)
);
""",
    )
)


def key_path(directory: Path, link: str) -> Path:
    return directory / f"{link}.key"


def is_damage(error: BaseException) -> bool:
    """Whether a sqlite3 error says the file is damaged (not merely locked or unreadable)."""
    return isinstance(error, sqlite3.DatabaseError) and (
        getattr(error, "sqlite_errorcode", None) in _DAMAGE_CODES
    )


def _check(db: sqlite3.Connection, path: Path) -> None:
    try:
        problems = [r[0] for r in db.execute("PRAGMA quick_check(1)")]
    except sqlite3.DatabaseError as e:
        if is_damage(e):
            raise StateDamaged(path, str(e)) from e
        raise StateUnusable(f"cannot read {path}: {e}") from e
    if problems != ["ok"]:
        said = " ".join(str(p).replace("*** in database main ***", "") for p in problems)
        raise StateDamaged(path, " ".join(said.split()))  # one line


def utcnow() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(frozen=True)
class LinkRecord:
    name: str
    url: str
    agent_id: str
    tenant_id: str
    site_id: str
    token_url: str
    key_file: str
    max_flow: FlowMode
    flow_mode: FlowMode
    ca_bundle: str | None
    last_seq: int
    docked_at: str
    last_contact_at: str | None


class State:
    """The state directory: `agent.db`, key files, and whatever modules keep there.

    Opening checks the file (`PRAGMA quick_check`): a damaged `agent.db` raises
    `StateDamaged`, never a `sqlite3` error, so every command can say what to do (`repair`).
    It then upgrades the file to the current schema (`SCHEMA`, see `migrations.py`); read-only
    it reads the file at its own version. A file from a newer agent raises `StateTooNew`.
    """

    def __init__(self, directory: Path, *, readonly: bool = False, immutable: bool = False) -> None:
        self.dir = directory
        self.path = directory / DB_NAME
        self._lock = threading.RLock()
        if not readonly:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            if readonly:
                params = "mode=ro&immutable=1" if immutable else "mode=ro"
                self.db = sqlite3.connect(
                    f"{self.path.resolve().as_uri()}?{params}", uri=True, check_same_thread=False
                )
            else:
                self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise StateUnusable(f"cannot open {self.path}: {e}") from e
        try:
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA busy_timeout=10000")
            _check(self.db, self.path)
            check_known(self.db, SCHEMA, self.path)
            if not readonly:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=FULL")
                upgrade(self.db, SCHEMA, self.path)
        except BaseException:
            self.db.close()
            raise

    @classmethod
    def existing(cls, directory: Path) -> State | None:
        """The state read-only, or None where there is none yet; creates and writes nothing
        (`status`, and `dock` asking whether it is docked already)."""
        path = directory / DB_NAME
        if not path.exists():
            return None
        # Without a WAL file no writer is at work and the file is whole: read it as immutable,
        # for even a read-only connection to a WAL database leaves -wal and -shm files behind.
        # With one, read through it (its files are there already). A writer that started in
        # between could make the immutable read look damaged: then read once more through WAL.
        quiet = not path.with_name(DB_NAME + "-wal").exists()
        try:
            state = cls(directory, readonly=True, immutable=quiet)
        except StateDamaged:
            if not quiet or not path.with_name(DB_NAME + "-wal").exists():
                raise
            state = cls(directory, readonly=True)
        tables = {r[0] for r in state.execute("SELECT name FROM sqlite_master")}
        if "links" not in tables:  # created but never written: nothing in it yet
            state.close()
            return None
        return state

    def close(self) -> None:
        self.db.close()

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self.db.execute(sql, params)

    def key_path(self, link: str) -> Path:
        return key_path(self.dir, link)

    # --- links ---------------------------------------------------------------------------

    def link(self, name: str) -> LinkRecord | None:
        row = self.execute("SELECT * FROM links WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        data = dict(row)
        data["max_flow"] = FlowMode(data["max_flow"])
        data["flow_mode"] = FlowMode(data["flow_mode"])
        data["key_file"] = str(self._key_file(data["key_file"]))
        return LinkRecord(**data)

    def _key_file(self, stored: str) -> Path:
        """Where the link's key is. Earlier agents stored the path as `--state` was typed
        (`./s/default.key`), relative to wherever `dock` ran; the key was always written in
        the state directory, so a relative path names the file of that name there."""
        path = Path(stored)
        return path if path.is_absolute() else (self.dir / path.name).resolve()

    def links(self) -> list[LinkRecord]:
        names = [r["name"] for r in self.execute("SELECT name FROM links ORDER BY name")]
        return [link for n in names if (link := self.link(n)) is not None]

    def save_link(self, record: LinkRecord) -> None:
        self.execute(
            "INSERT OR REPLACE INTO links VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                record.name,
                record.url,
                record.agent_id,
                record.tenant_id,
                record.site_id,
                record.token_url,
                record.key_file,
                record.max_flow.value,
                record.flow_mode.value,
                record.ca_bundle,
                record.last_seq,
                record.docked_at,
                record.last_contact_at,
            ),
        )

    def forget_link(self, name: str) -> None:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            for table in ("links", "policies", "features"):
                column = "name" if table == "links" else "link"
                self.db.execute(f"DELETE FROM {table} WHERE {column} = ?", (name,))  # noqa: S608
            self.db.execute("COMMIT")

    def advance(self, link: str, seq: int) -> None:
        self.execute(
            "UPDATE links SET last_seq = MAX(last_seq, ?), last_contact_at = ? WHERE name = ?",
            (seq, utcnow(), link),
        )

    def set_flow_mode(self, link: str, mode: FlowMode) -> None:
        self.execute("UPDATE links SET flow_mode = ? WHERE name = ?", (mode.value, link))

    # --- policies and features -----------------------------------------------------------

    def put_policy(
        self,
        link: str,
        policy_id: str,
        kind: str,
        name: str,
        version: int,
        document: dict[str, Any],
    ) -> None:
        self.execute(
            "INSERT OR REPLACE INTO policies VALUES (?,?,?,?,?,?)",
            (link, policy_id, kind, name, version, json.dumps(document)),
        )

    def drop_policy(self, link: str, policy_id: str) -> None:
        self.execute("DELETE FROM policies WHERE link = ? AND policy_id = ?", (link, policy_id))

    def policies(self, link: str | None = None) -> list[dict[str, Any]]:
        rows = self.execute(
            "SELECT * FROM policies WHERE (? IS NULL OR link = ?) ORDER BY kind, name", (link, link)
        ).fetchall()
        return [dict(r) | {"document": json.loads(r["document"])} for r in rows]

    def set_features(self, link: str, module: str, features: list[str]) -> None:
        self.execute(
            "INSERT OR REPLACE INTO features VALUES (?,?,?)", (link, module, json.dumps(features))
        )

    def features(self, link: str) -> dict[str, list[str]]:
        rows = self.execute("SELECT module, features FROM features WHERE link = ?", (link,))
        return {r["module"]: json.loads(r["features"]) for r in rows}


# --- repair ---------------------------------------------------------------------------------

TABLES = ("links", "journal", "policies", "features")


@dataclass
class Salvage:
    """What `repair` kept of a damaged `agent.db`: rows per table, and whether any table
    could not be read to its end (then rows are missing from it)."""

    aside: Path
    reason: str
    rows: dict[str, int]
    incomplete: list[str]


def damage(directory: Path) -> str | None:
    """Why `agent.db` in `directory` is damaged, or None when it is sound or absent."""
    try:
        state = State.existing(directory)
    except StateDamaged as e:
        return e.reason
    if state is not None:
        state.close()
    return None


COMPANIONS = ("-wal", "-shm", "-journal")
"""The files SQLite keeps beside a database, which belong to it: a new `agent.db` opened
beside an old `-journal` would take it for its own and roll the old pages into itself."""


def set_aside(directory: Path, now: datetime) -> Path:
    """Move `agent.db` and its companion files to `agent.db.damaged-<UTC time>`, kept,
    never deleted: what repair could not read may still matter to a person. A name taken
    already (a second repair within the second) gets a number, never overwritten."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    aside = directory / f"{DB_NAME}.damaged-{stamp}"
    n = 1
    while any(aside.with_name(aside.name + x).exists() for x in ("", *COMPANIONS)):
        n += 1
        aside = directory / f"{DB_NAME}.damaged-{stamp}-{n}"
    for suffix in (*COMPANIONS, ""):  # the database last: until then it is still found
        source = directory / f"{DB_NAME}{suffix}"
        if source.exists():
            source.replace(aside.with_name(aside.name + suffix))
    return aside


def salvage(aside: Path, reason: str, into: State) -> Salvage:
    """Copy every row that can still be read from the damaged file at `aside` into `into`.

    Reads table by table with SQLite's own reader; a table that fails part way keeps the
    rows read before the failure. A row the new schema refuses (a damaged value) is skipped.
    """
    rows = dict.fromkeys(TABLES, 0)
    incomplete: list[str] = []
    # No writer can be at work on a file set aside: without a WAL, read it as immutable,
    # which adds no -wal and -shm of its own beside it; with one, read through it.
    params = "mode=ro" if aside.with_name(aside.name + "-wal").exists() else "immutable=1"
    try:
        old = sqlite3.connect(f"{aside.resolve().as_uri()}?{params}", uri=True)
    except sqlite3.Error:
        return Salvage(aside, reason, rows, list(TABLES))
    try:
        for table in TABLES:
            try:
                for row in old.execute(f"SELECT * FROM {table}"):  # noqa: S608 - our table names
                    marks = ",".join("?" * len(row))
                    try:
                        into.execute(f"INSERT OR IGNORE INTO {table} VALUES ({marks})", tuple(row))  # noqa: S608
                    except sqlite3.Error:
                        continue
                    rows[table] += 1
            except sqlite3.Error:
                incomplete.append(table)
    finally:
        old.close()
    return Salvage(aside, reason, rows, incomplete)
