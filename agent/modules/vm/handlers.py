"""The module's commands from the cloud (`vm.discover`, `vm.power`, `vm.create`,
`vm.evaluate`, `vm.resolve`, `vm.approve`, `vm.report`, and the archive feature's), the
budget approvals the shell shares with them, and after a crash mid-command, whether its
effect happened (`reconcile`), so the journal never runs a power change twice.

A mixin of `VmModule` (module.py): each command reaches a different part of the module,
so a collaborator would need the whole module anyway.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, cast

from ...clock import Clock
from ...protocol import CommandEntry
from ...protocol.vm import PowerAction
from ..base import CommandFailed, Handler, Outcome
from . import placement
from .archiving import ArchiveService
from .drivers.base import DriverError
from .lifecycle import Lifecycle, RunReport
from .pool import DriverPool
from .reports import Reports
from .settings import Settings
from .store import VmStore

if TYPE_CHECKING:
    from .module import VmModule


class Commands:
    # The module's parts the commands use, made by VmModule.__init__; the methods are the
    # worker's (worker.py).
    clock: Clock
    store: VmStore
    config: Settings
    drivers: DriverPool
    reports: Reports
    lifecycle: Lifecycle
    archives: ArchiveService

    if TYPE_CHECKING:

        def discover(self, now: datetime, endpoints: list[str] | None = None) -> dict[str, str]: ...

        def run_lifecycle(self, now: datetime) -> RunReport: ...

        def reference_now(self, now: datetime | None = None) -> datetime: ...

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
                self.config.policy(), endpoint, native_id, action, now, source="cloud"
            )
        except DriverError as e:
            raise CommandFailed(e.code, str(e)) from e
        finally:
            self.reports.upload_audit()
        decision_id = args.get("decision_id")
        if decision_id:
            self.store.set_outcome(str(decision_id), f"done: {state}")
        self.reports.upload_inventory(self.clock())  # the catalog learns the new state (a delta)
        return Outcome(counts={"vms": 1}, detail=f"{endpoint}/{native_id} is {state}")

    def cmd_approve(self, command: CommandEntry) -> Outcome:
        """The cloud's approval (`approveVmActions`): N more actions past the budget."""
        count = command.args.get("count")
        if not isinstance(count, int) or not 1 <= count <= 1000:
            raise CommandFailed("bad_args", "vm.approve takes a count between 1 and 1000")
        pool = self.approve(count, "cloud", str(command.args.get("by", "")) or None)
        self.reports.upload_audit()
        return Outcome(counts={"approved": count, "pool": pool})

    def approve(self, count: int, source: str, by: str | None = None) -> int:
        pool = self.store.approve(count)
        self.store.add_audit(
            "vm.approve", None, "ok", self.clock(), count=count, pool=pool, source=source, by=by
        )
        return pool

    def cmd_report(self, command: CommandEntry) -> Outcome:
        """A full inventory report, on the cloud's request."""
        return Outcome(counts={"vms": self.reports.upload_inventory(self.clock(), full=True)})

    def cmd_create(self, command: CommandEntry) -> Outcome:
        args = dict(command.args)
        try:
            endpoint = str(args.pop("endpoint"))
            spec = placement.spec_from(args)
        except (KeyError, ValueError) as e:
            raise CommandFailed("bad_args", f"vm.create: {e}") from e
        try:
            # Placement takes the whole module, which this mixin is only ever part of.
            vm, host, datastore = placement.create(
                cast("VmModule", self), endpoint, spec, self.clock()
            )
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
            fresh = self.drivers.driver(stored.endpoint).discover()
        except DriverError:
            return None
        want = "on" if command.args.get("action") == PowerAction.POWER_ON else "off"
        return any(v.native_id == stored.vm.native_id and v.power_state == want for v in fresh.vms)
