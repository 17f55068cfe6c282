"""The `vm` module: VM life cycle across vSphere, libvirt/KVM and EC2.

Standalone it discovers VMs, keeps their activity history, judges idleness, gives notice and
shuts idle VMs down (see lifecycle.py); it also creates VMs by placement policy. Docked, its
policy comes from the cloud, its inventory and decisions go up (flow mode `metadata` and
above) and the cloud gives the notices and issues the shutdowns.

Its work runs on a thread of its own, paced by the module's clock, so a slow vCenter never
holds up the agent's poll, and a held poll never delays a sample.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from ...errors import FlowModeForbids
from ...protocol import CommandEntry, MetadataBatch
from ...protocol.vm import POLICY_KIND, PowerAction, VmLifecyclePolicy
from ..base import CommandFailed, Handler, ModuleContext, Outcome
from . import placement
from .archiving import ArchiveService
from .drivers.base import Driver, DriverError
from .endpoints import Endpoints
from .lifecycle import Lifecycle
from .pool import DriverPool
from .reports import Reports
from .settings import Settings
from .store import VmStore
from .worker import Rounds


class VmModule(Rounds):
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

    # --- configuration (settings.py) ---------------------------------------------------

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

    def on_policy(
        self, kind: str, name: str, version: int, document: dict[str, Any] | None
    ) -> None:
        self.config.docked = (
            None if document is None else VmLifecyclePolicy.model_validate(document)
        )
        self.log.info(
            "vm-lifecycle policy %s v%d %s", name, version, "applied" if document else "withdrawn"
        )

    def driver(self, endpoint: str) -> Driver:
        return self.drivers.driver(endpoint)

    def close(self) -> None:
        self.stop_worker()
        if self.answers is not None:
            self.answers.shutdown()
        self.drivers.close()
        self.store.close()

    # --- going up (reports.py) ---------------------------------------------------------

    def records(self, now: datetime, include_gone: bool = False) -> list[dict[str, Any]]:
        return self.reports.records(now, include_gone)

    def upload_inventory(self, now: datetime, full: bool = False) -> int:
        return self.reports.upload_inventory(now, full)

    def upload_audit(self) -> int:
        return self.reports.upload_audit()

    # --- commands ------------------------------------------------------------------------

    def handlers(self) -> dict[str, Handler]:
        return {
            "vm.discover": self.cmd_discover,
            "vm.power": self.cmd_power,
            "vm.create": self.cmd_create,
            "vm.evaluate": self.cmd_evaluate,
            "vm.resolve": self.cmd_resolve,
            "vm.approve": self.cmd_approve,
            "vm.report": self.cmd_report,
            **self.archives.handlers(),
        }

    def cmd_discover(self, command: CommandEntry) -> Outcome:
        results = self.discover(self.clock())
        failed = {k: v for k, v in results.items() if v.startswith("error")}
        if failed and len(failed) == len(results):
            name, text = next(iter(failed.items()))
            raise CommandFailed(text.split()[1].rstrip(":"), f"{name}: {text}")
        return Outcome(
            counts={"endpoints": len(results), "failed": len(failed), "vms": len(self.store.vms())},
            detail="; ".join(f"{k}: {v}" for k, v in results.items()),
        )

    def cmd_power(self, command: CommandEntry) -> Outcome:
        args = command.args
        try:
            action = PowerAction(str(args.get("action")))
            endpoint, native_id = str(args["endpoint"]), str(args["native_id"])
        except (KeyError, ValueError) as e:
            raise CommandFailed("bad_args", "vm.power needs endpoint, native_id and action") from e
        now = self.clock()
        not_before = args.get("not_before")
        if not_before:
            try:
                due = datetime.fromisoformat(str(not_before))
            except ValueError as e:
                raise CommandFailed("bad_args", "not_before is an ISO-8601 time") from e
            if due.tzinfo is None:
                raise CommandFailed("bad_args", "not_before carries its UTC offset")
            # The notice's time, judged by the cloud's clock (which stated it), not by this
            # agent's, which may run days ahead or behind.
            if self.reference_now(now) < due:
                self.store.add_audit(
                    "vm.power",
                    f"{endpoint}/{native_id}",
                    "refused",
                    now,
                    code="not_due",
                    reason=f"the notice runs out at {due.isoformat()}",
                    source="cloud",
                )
                raise CommandFailed(
                    "not_due", f"the notice runs out at {due:%Y-%m-%d %H:%M} UTC; not before"
                )
        try:
            state = self.lifecycle.power(
                self.policy(), endpoint, native_id, action, now, source="cloud"
            )
        except DriverError as e:
            raise CommandFailed(e.code, str(e)) from e
        finally:
            self.upload_audit()
        decision_id = args.get("decision_id")
        if decision_id:
            self.store.set_outcome(str(decision_id), f"done: {state}")
        self.upload_inventory(self.clock())  # the catalog learns the new state (a delta)
        return Outcome(counts={"vms": 1}, detail=f"{endpoint}/{native_id} is {state}")

    def cmd_approve(self, command: CommandEntry) -> Outcome:
        """The cloud's approval (`approveVmActions`): N more actions past the budget."""
        count = command.args.get("count")
        if not isinstance(count, int) or not 1 <= count <= 1000:
            raise CommandFailed("bad_args", "vm.approve takes a count between 1 and 1000")
        pool = self.approve(count, "cloud", str(command.args.get("by", "")) or None)
        self.upload_audit()
        return Outcome(counts={"approved": count, "pool": pool})

    def approve(self, count: int, source: str, by: str | None = None) -> int:
        pool = self.store.approve(count)
        self.store.add_audit(
            "vm.approve", None, "ok", self.clock(), count=count, pool=pool, source=source, by=by
        )
        return pool

    def cmd_report(self, command: CommandEntry) -> Outcome:
        """A full inventory report, on the cloud's request."""
        return Outcome(counts={"vms": self.upload_inventory(self.clock(), full=True)})

    def cmd_create(self, command: CommandEntry) -> Outcome:
        args = dict(command.args)
        try:
            endpoint = str(args.pop("endpoint"))
            spec = placement.spec_from(args)
        except (KeyError, ValueError) as e:
            raise CommandFailed("bad_args", f"vm.create: {e}") from e
        try:
            vm, host, datastore = placement.create(self, endpoint, spec, self.clock())
        except DriverError as e:
            raise CommandFailed(e.code, str(e)) from e
        return Outcome(
            counts={"vms": 1},
            detail=f"{endpoint}/{vm.native_id} {vm.name} on {host.name}, {datastore.name}",
        )

    def cmd_evaluate(self, command: CommandEntry) -> Outcome:
        report = self.run_lifecycle(self.clock())
        return Outcome(
            counts={
                "idle": report.idle,
                "proposed": len(report.proposed),
                "acted": len(report.acted),
                "held": len(report.held),
            }
        )

    def cmd_resolve(self, command: CommandEntry) -> Outcome:
        """The cloud closed one of this agent's proposals (today: its owner skipped it)."""
        decision_id = str(command.args.get("decision_id", ""))
        outcome = str(command.args.get("outcome", ""))
        if outcome != "skipped":
            raise CommandFailed("bad_args", "vm.resolve takes outcome 'skipped'")
        found = self.store.decision(decision_id)
        if found is None:
            raise CommandFailed("not_found", f"no decision {decision_id} on this agent")
        decision, _ = found
        self.store.set_outcome(decision_id, outcome)
        self.store.set_quiet_from(decision.endpoint, decision.native_id, self.clock())
        return Outcome(counts={"decisions": 1})

    def reconcile(self, command: CommandEntry) -> bool | None:
        archived = self.archives.reconcile(command)
        if archived is not None or command.name != "vm.power":
            return archived
        stored = self.store.vm(
            str(command.args.get("endpoint")), str(command.args.get("native_id"))
        )
        if stored is None:
            return None
        try:
            fresh = self.driver(stored.endpoint).discover()
        except DriverError:
            return None
        want = "on" if command.args.get("action") == PowerAction.POWER_ON else "off"
        return any(v.native_id == stored.vm.native_id and v.power_state == want for v in fresh.vms)


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
