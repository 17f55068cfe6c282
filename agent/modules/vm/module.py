"""`VmModule`, put together: its store and endpoints, its settings and policies
(settings.py), its drivers (pool.py), what goes up (reports.py), the life cycle and the
archive feature, with the worker's rounds (worker.py) and the commands (handlers.py) as
mixins. The methods here are what the shell, the archive feature (`ArchiveHost`) and
placement call the module for, each handed to the part that holds it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from ...errors import FlowModeForbids
from ...protocol import MetadataBatch
from ...protocol.vm import POLICY_KIND, VmLifecyclePolicy
from ..base import ModuleContext
from .archiving import ArchiveService
from .drivers.base import Driver
from .endpoints import Endpoints
from .handlers import Commands
from .lifecycle import Lifecycle
from .pool import DriverPool
from .reports import Reports
from .settings import Settings
from .store import VmStore
from .worker import Rounds


class VmModule(Commands, Rounds):
    name: ClassVar[str] = "vm"
    version: ClassVar[str] = "0.1.0"
    standalone_features: ClassVar[frozenset[str]] = frozenset(
        {"discovery", "idle_detection", "notices", "shutdown", "placement"}
    )
    policy_kinds: ClassVar[frozenset[str]] = frozenset({POLICY_KIND})

    @classmethod
    def add_cli(cls, sub: Any) -> argparse.ArgumentParser:
        from . import cli

        return cli.add_parser(sub)

    @classmethod
    def cli_examples(cls) -> dict[str, str]:
        from . import cli

        return cli.EXAMPLES

    @classmethod
    def run_cli(
        cls, args: argparse.Namespace, state_dir: Path, policies: list[dict[str, Any]]
    ) -> int:
        from . import cli

        return cli.main(args, state_dir, policies)

    def __init__(self, ctx: ModuleContext) -> None:
        super().__init__(ctx)
        self.clock = ctx.clock
        self.store = VmStore(ctx.state_dir / "vm.sqlite")
        self.endpoints = Endpoints(ctx.state_dir / "endpoints.json")
        self.config = Settings(ctx.state_dir, self.endpoints)
        self.drivers = DriverPool(self.endpoints)
        self.reports = Reports(self.store, ctx, self.policy, self.log)
        self.lifecycle = Lifecycle(
            self.store,
            self.driver,
            lambda: [n for n in sorted(self.endpoints.all()) if self.local_policy().covers(n)],
            self.config.link_key(),
            self.config.link_base,
            self.config.smtp,
            self.config.bmc,
        )
        self.archives = ArchiveService(self)

    def on_policy(
        self, kind: str, name: str, version: int, document: dict[str, Any] | None
    ) -> None:
        self.config.docked = (
            None if document is None else VmLifecyclePolicy.model_validate(document)
        )
        self.log.info(
            "vm-lifecycle policy %s v%d %s", name, version, "applied" if document else "withdrawn"
        )

    def close(self) -> None:
        self.stop_worker()
        if self.answers is not None:
            self.answers.shutdown()
        self.drivers.close()
        self.store.close()

    # --- handed to the parts that hold them ----------------------------------------------

    def settings(self) -> dict[str, Any]:
        return self.config.settings()

    def update_settings(self, **values: Any) -> None:
        self.config.update_settings(**values)

    def policy(self) -> VmLifecyclePolicy:
        return self.config.policy()

    def local_policy(self) -> VmLifecyclePolicy:
        return self.config.local_policy()

    def set_local_policy(self, document: dict[str, Any]) -> VmLifecyclePolicy:
        return self.config.set_local_policy(document)

    def _link_base(self) -> str:
        return self.config.link_base()

    def driver(self, endpoint: str) -> Driver:
        return self.drivers.driver(endpoint)

    def records(self, now: datetime, include_gone: bool = False) -> list[dict[str, Any]]:
        return self.reports.records(now, include_gone)

    def upload_inventory(self, now: datetime, full: bool = False) -> int:
        return self.reports.upload_inventory(now, full)

    def upload_audit(self) -> int:
        return self.reports.upload_audit()


def module_at(
    state_dir: Path, clock: Any = None, cloud_time: Callable[[], datetime | None] | None = None
) -> VmModule:
    """The module on its own, for the CLI and tests: nothing goes up. `cloud_time`: the
    cloud's time as the docked agent last measured it, so the shell states and judges
    notices by the same clock as the running agent."""

    def refuse(batch: MetadataBatch) -> None:
        raise FlowModeForbids("standalone: nothing goes up")

    ctx = ModuleContext(state_dir, lambda: None, refuse)
    if clock is not None:
        ctx.clock = clock
    if cloud_time is not None:
        ctx.cloud_time = cloud_time
    return VmModule(ctx)
