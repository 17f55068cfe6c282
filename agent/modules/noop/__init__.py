"""The `noop` module: the smallest complete module, to copy when starting a new one.

It does nothing useful, observably: `noop.append` writes a line to `lines.log` in its folder
(an effect a test can count after a kill -9), `noop.echo` answers its arguments, `noop.fail`
fails, `noop.report` sends a metadata batch. The features docking unlocks and its current
policy are written to `features.json` and `policy.json`, and each standalone tick writes
`heartbeat.json`, so all of it can be seen from outside.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any, ClassVar

from ...errors import FlowModeForbids
from ...protocol import CommandEntry, MetadataBatch
from ..base import CommandFailed, Handler, Module, Outcome


class NoopModule(Module):
    name: ClassVar[str] = "noop"
    version: ClassVar[str] = "0.1.0"
    standalone_features: ClassVar[frozenset[str]] = frozenset({"status"})
    policy_kinds: ClassVar[frozenset[str]] = frozenset({"noop"})

    @property
    def lines(self) -> Any:
        return self.ctx.state_dir / "lines.log"

    def handlers(self) -> dict[str, Handler]:
        return {
            "noop.append": self.append,
            "noop.echo": self.echo,
            "noop.fail": self.fail,
            "noop.report": self.report,
        }

    def append(self, command: CommandEntry) -> Outcome:
        text = str(command.args.get("text", ""))
        if "\n" in text or len(text) > 1000:
            raise CommandFailed("bad_args", "text is one line of at most 1000 characters")
        with open(self.lines, "a", encoding="utf-8") as f:
            f.write(f"{command.command_id} {text}\n")
            f.flush()
            os.fsync(f.fileno())
        return Outcome(counts={"lines": 1})

    def reconcile(self, command: CommandEntry) -> bool | None:
        if command.name != "noop.append":
            return None
        if not self.lines.exists():
            return False
        mark = f"{command.command_id} "
        with open(self.lines, encoding="utf-8") as f:
            return any(line.startswith(mark) for line in f)

    def echo(self, command: CommandEntry) -> Outcome:
        return Outcome(detail=json.dumps(command.args, sort_keys=True))

    def fail(self, command: CommandEntry) -> Outcome:
        raise CommandFailed(str(command.args.get("code", "requested_failure")), "failed on request")

    def report(self, command: CommandEntry) -> Outcome:
        count = 0
        if self.lines.exists():
            with open(self.lines, encoding="utf-8") as f:
                count = sum(1 for _ in f)
        batch = MetadataBatch(
            batch_id=uuid.uuid5(uuid.NAMESPACE_URL, f"noop-report:{command.command_id}"),
            module="noop",
            kind="status",
            records=[{"lines": count}],
        )
        try:
            self.ctx.upload(batch)
        except FlowModeForbids as e:
            raise CommandFailed("flow_mode_forbids", str(e)) from e
        return Outcome(counts={"records": 1})

    def tick(self) -> None:
        beat = {"at": time.time(), "features": sorted(self.features)}
        tmp = self.ctx.state_dir / "heartbeat.json.tmp"
        tmp.write_text(json.dumps(beat))
        os.replace(tmp, self.ctx.state_dir / "heartbeat.json")

    def on_features_changed(self) -> None:
        path = self.ctx.state_dir / "features.json"
        path.write_text(json.dumps(sorted(self.features)))
        self.log.info("features now %s", ", ".join(sorted(self.features)))

    def on_policy(
        self, kind: str, name: str, version: int, document: dict[str, Any] | None
    ) -> None:
        path = self.ctx.state_dir / "policy.json"
        path.write_text(json.dumps({"name": name, "version": version, "document": document}))
