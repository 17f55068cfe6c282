"""Schema versions of the agent's SQLite files, and their upgrade one step at a time.

Each file (`agent.db`, a module's own file such as the VM module's `vm.sqlite`) declares its
`Schema`: an ordered list of steps, step *n* taking the file from version *n - 1* to *n*.
The version a file is at lives in the file itself, in SQLite's `PRAGMA user_version` (an
integer in the header, 0 in a new file and in every file from before versions), so it can
never disagree with the tables beside it. Opening a file for writing runs the steps it has
not had, each in one `BEGIN IMMEDIATE` transaction with the new version, so a step killed
part way leaves the file at the version before it and is run again at the next open.

Rules for a step: never edit one that has shipped, add the next; step 1 of each schema is
its shape before versions, written `IF NOT EXISTS`, so it adopts an unversioned file as it
is. A file at a version above the last step was written by a newer agent: it is refused
(`StateTooNew`, exit 5) and left as it is, for a downgrade could silently lose what the
newer agent keeps.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from .errors import StateTooNew


@dataclass(frozen=True)
class Schema:
    steps: tuple[str, ...]
    """SQL scripts; `steps[n - 1]` takes a file from version n - 1 to version n."""

    @property
    def version(self) -> int:
        """The version a file is at once every step has run."""
        return len(self.steps)


def version_of(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def check_known(db: sqlite3.Connection, schema: Schema, path: Path) -> int:
    """The file's version; `StateTooNew` if a newer agent wrote it."""
    found = version_of(db)
    if found > schema.version:
        raise StateTooNew(path, found, schema.version)
    return found


def upgrade(db: sqlite3.Connection, schema: Schema, path: Path) -> int:
    """Run the steps the file has not had; returns how many ran.

    `db` is in autocommit mode (`isolation_level=None`). The version is read again inside
    each step's write lock, so two processes opening one file at once run each step once.
    """
    ran = 0
    while check_known(db, schema, path) < schema.version:
        db.execute("BEGIN IMMEDIATE")
        try:
            at = check_known(db, schema, path)
            if at < schema.version:
                for statement in _statements(schema.steps[at]):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {at + 1}")
                ran += 1
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    return ran


def _statements(script: str) -> list[str]:
    """A step's script cut into whole statements (`executescript` would commit first)."""
    found, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            found.append(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError(f"an unfinished statement in a schema step: {pending.strip()!r}")
    return found
