"""The contract every module keeps; the runner owns the loop, the link and the journal.

A module declares what it can do alone (`standalone_features`), receives the features
docking unlocks (`set_features`), the policies of the kinds it declares (`policy_kinds`,
`on_policy`), and the commands addressed to
it (`handlers`, keyed by `module.action`). A handler returns an `Outcome` or raises
`CommandFailed`; if its effect can be checked after a crash, `reconcile` says whether it
happened, so the journal never runs it twice.
"""

from __future__ import annotations

import argparse
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from ..clock import Clock, from_env
from ..errors import FlowModeForbids
from ..protocol import CommandEntry, FlowMode, MetadataBatch
from ..vault.backends import Backend


class CommandFailed(Exception):
    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(detail or code)
        self.code, self.detail = code, detail


@dataclass(frozen=True)
class Outcome:
    code: str = "ok"
    counts: dict[str, int] = field(default_factory=dict)
    detail: str | None = None


@dataclass
class ModuleContext:
    state_dir: Path
    """The module's own folder inside the agent's state directory."""
    flow_mode: Callable[[], FlowMode | None]
    """The docked link's effective mode, None when standalone."""
    upload: Callable[[MetadataBatch], None]
    """Send a metadata batch up; raises FlowModeForbids when the mode does not allow it."""
    clock: Clock = field(default_factory=from_env)
    """What every lifecycle timer reads (see clock.py)."""
    cloud_time: Callable[[], datetime | None] = lambda: None
    """Docked, the cloud's time now as this agent estimates it (its clock minus the skew
    measured on the cloud's answers); None standalone or before any answer."""
    vault: Callable[[str], Backend] = lambda name: _no_cloud_storage(name)
    """A vault back end on the storage the cloud manages for this tenant, under `name`
    (e.g. `vm-archive`): objects go through URLs the cloud signs one by one, so the module
    holds no credentials and never the link. FlowModeForbids unless docked in flow mode
    `data`. Storage the tenant owns (a directory, its S3) the module opens itself."""
    progress: Callable[[uuid.UUID, float, str | None], None] = lambda job, fraction, detail: None
    """How far a running command's job has come (0 to 1) and, where the flow mode lets
    words go up, what it is doing: a job event sent at once when docked. Never fails the
    command: a progress report that cannot be sent is dropped (the result is what counts)."""


def _no_cloud_storage(name: str) -> Backend:
    raise FlowModeForbids(f"standalone: there is no cloud storage for {name!r}")


Handler = Callable[[CommandEntry], Outcome]


class Module:
    name: ClassVar[str]
    version: ClassVar[str] = "0.1.0"
    standalone_features: ClassVar[frozenset[str]] = frozenset()
    policy_kinds: ClassVar[frozenset[str]] = frozenset()
    """The policy kinds this module takes: the runner hands it those and no others."""

    @classmethod
    def add_cli(cls, sub: Any) -> argparse.ArgumentParser | None:
        """The module's own commands (`dockyard-agent NAME ...`) on the agent's sub-command
        parsers, or None; `run_cli` then runs whichever was asked for. A module's shell is
        the module's business: the agent's CLI knows no module by name."""
        return None

    @classmethod
    def cli_examples(cls) -> dict[str, str]:
        """An example line per command `add_cli` added, keyed by its path (`"vm ls"`), shown
        under the command's --help; a test checks every command has one and that it parses."""
        return {}

    @classmethod
    def run_cli(
        cls, args: argparse.Namespace, state_dir: Path, policies: list[dict[str, Any]]
    ) -> int:
        """Run the command `add_cli` parsed; `policies` are the assigned ones of its kinds."""
        raise NotImplementedError(f"{cls.name} adds no commands")

    def __init__(self, ctx: ModuleContext) -> None:
        self.ctx = ctx
        self.log = logging.getLogger(f"dockyard.agent.modules.{self.name}")
        self.docked_features: frozenset[str] = frozenset()
        ctx.state_dir.mkdir(parents=True, exist_ok=True)

    @property
    def features(self) -> frozenset[str]:
        return self.standalone_features | self.docked_features

    def set_features(self, docked: frozenset[str]) -> None:
        if docked != self.docked_features:
            self.docked_features = docked
            self.on_features_changed()

    def on_features_changed(self) -> None:
        """Switch unlocked features on and off; the default does nothing more."""

    def on_policy(
        self, kind: str, name: str, version: int, document: dict[str, Any] | None
    ) -> None:
        """A policy arrived (document) or no longer applies (None)."""

    def handlers(self) -> dict[str, Handler]:
        return {}

    def reconcile(self, command: CommandEntry) -> bool | None:
        """After a crash mid-command: did its effect happen? None: this module cannot tell."""
        return None

    def tick(self) -> None:
        """Standalone work, called every few seconds whether docked or not."""


class BackgroundModule(Module):
    """A module whose work runs in rounds on a thread of its own, so a slow hypervisor or
    a long archive never holds up the runner's poll: the runner's `tick` starts the thread
    (again, should it have died), a round that raises is logged and the next one comes
    after the pause, and `stop_worker` ends it between rounds. Subclasses give `round`
    and, if they need another pace, `pause_s`."""

    def __init__(self, ctx: ModuleContext) -> None:
        super().__init__(ctx)
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()

    def round(self) -> None:
        """One round of the module's own work."""
        raise NotImplementedError

    def pause_s(self) -> float:
        """Seconds between rounds (read again after each, so a setting can change it)."""
        return 60.0

    def tick(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(
                target=self._work, name=f"{self.name}-module", daemon=True
            )
            self._worker.start()

    def stop_worker(self, timeout: float = 10.0) -> None:
        """Ask the thread to stop and wait (a while) for the round in hand to end, so what
        the module closes next is not pulled from under it."""
        self._stop.set()
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                self.round()
            except Exception:
                self.log.exception("%s module: a round failed", self.name)
            self._stop.wait(self.pause_s())
