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

from .protocol import FlowMode

SCHEMA = """
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
"""


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
    """The state directory: `agent.db`, key files, and whatever modules keep there."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.RLock()
        self.db = sqlite3.connect(
            directory / "agent.db", isolation_level=None, check_same_thread=False
        )
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA busy_timeout=10000")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self.db.execute(sql, params)

    def key_path(self, link: str) -> Path:
        return self.dir / f"{link}.key"

    # --- links ---------------------------------------------------------------------------

    def link(self, name: str) -> LinkRecord | None:
        row = self.execute("SELECT * FROM links WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        data = dict(row)
        data["max_flow"] = FlowMode(data["max_flow"])
        data["flow_mode"] = FlowMode(data["flow_mode"])
        return LinkRecord(**data)

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
