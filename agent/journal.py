"""The command journal: what makes each command's effect happen once.

Delivery is at-least-once: a command may arrive again after a crash or a lost ack. Before
running a command the agent writes `started`; after the effect it writes `done` (or
`failed`). A command found `done` is never run again, only acknowledged again. One found
`started` was interrupted: its module is asked whether the effect happened (`reconcile`);
if the module cannot tell, the command fails as `interrupted` rather than run twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .state import State, utcnow

FINAL = ("done", "failed", "rejected")


@dataclass(frozen=True)
class JournalEntry:
    command_id: str
    seq: int
    job_id: str
    name: str
    args: dict[str, Any]
    state: str
    result_code: str | None
    detail: str | None
    reported: bool


class Journal:
    def __init__(self, state: State) -> None:
        self._state = state

    def get(self, command_id: str) -> JournalEntry | None:
        row = self._state.execute(
            "SELECT * FROM journal WHERE command_id = ?", (command_id,)
        ).fetchone()
        if row is None:
            return None
        return JournalEntry(
            command_id=row["command_id"],
            seq=row["seq"],
            job_id=row["job_id"],
            name=row["name"],
            args=json.loads(row["args"]),
            state=row["state"],
            result_code=row["result_code"],
            detail=row["detail"],
            reported=bool(row["reported"]),
        )

    def start(
        self, link: str, command_id: str, seq: int, job_id: str, name: str, args: dict[str, Any]
    ) -> None:
        self._state.execute(
            "INSERT INTO journal (link, command_id, seq, job_id, name, args, state, started_at)"
            " VALUES (?,?,?,?,?,?, 'started', ?)",
            (link, command_id, seq, job_id, name, json.dumps(args), utcnow()),
        )

    def finish(
        self, command_id: str, state: str, code: str | None, detail: str | None = None
    ) -> None:
        assert state in FINAL
        self._state.execute(
            "UPDATE journal SET state = ?, result_code = ?, detail = ?, finished_at = ?"
            " WHERE command_id = ?",
            (state, code, detail, utcnow(), command_id),
        )

    def mark_reported(self, command_id: str) -> None:
        self._state.execute("UPDATE journal SET reported = 1 WHERE command_id = ?", (command_id,))

    def unreported(self, link: str) -> list[JournalEntry]:
        rows = self._state.execute(
            "SELECT command_id FROM journal WHERE link = ? AND reported = 0 AND state IN"
            " ('done', 'failed', 'rejected') ORDER BY seq",
            (link,),
        ).fetchall()
        return [e for r in rows if (e := self.get(r["command_id"])) is not None]
