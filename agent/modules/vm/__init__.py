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
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from ...errors import FlowModeForbids
from ...protocol import CommandEntry, FlowMode, MetadataBatch
from ...protocol.vm import POLICY_KIND, PowerAction, Signal, VmLifecyclePolicy
from ..base import BackgroundModule, CommandFailed, Handler, ModuleContext, Outcome
from . import placement
from .archiving import FEATURE as FEATURE_ARCHIVE
from .archiving import ArchiveService
from .drivers.base import Driver, DriverError, Sample
from .endpoints import Endpoints
from .lifecycle import Lifecycle, RunReport
from .pool import DriverPool
from .reports import Reports, host_rows
from .settings import Settings
from .store import HOST_PREFIX, VmStore

WORKER_PAUSE_S = 5.0


@dataclass
class Pace:
    """When each kind of work last ran, by the module's clock."""

    discovered: datetime | None = None
    sampled: datetime | None = None
    evaluated: datetime | None = None


class VmModule(BackgroundModule):
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
        self._work_lock = threading.Lock()
        self.pace = Pace()
        self.lifecycle = Lifecycle(
            self.store,
            self.driver,
            lambda: [n for n in sorted(self.endpoints.all()) if self.local_policy().covers(n)],
            self.config.link_key(),
            self.config.link_base,
            self.config.smtp,
            self.config.bmc,
        )
        self.answers: Any = None
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

    # --- the work ------------------------------------------------------------------------

    def reference_now(self, now: datetime | None = None) -> datetime:
        """The time notices are stated in and judged by: docked, the cloud's (as this agent
        estimates it from the measured skew), so an agent whose clock runs days ahead or
        behind still acts at the time the notice states; standalone, the module's clock."""
        return self.ctx.cloud_time() or now or self.clock()

    def notify_here(self) -> bool:
        """Standalone, or docked in config mode: notices and actions stay on this agent."""
        mode = self.ctx.flow_mode()
        return mode is None or not mode.allows(FlowMode.METADATA)

    def discover(self, now: datetime, endpoints: list[str] | None = None) -> dict[str, str]:
        """Reads every endpoint; one that fails is reported and the others go on."""
        results: dict[str, str] = {}
        for name in endpoints or sorted(self.endpoints.all()):
            try:
                driver = self.driver(name)
                inventory = driver.discover()
            except DriverError as e:
                results[name] = f"error {e.code}: {e}"
                self.log.warning("discovery of %s failed: %s", name, e)
                continue
            hosts = host_rows(inventory) if driver.kind != "ec2" else []
            seen, gone = self.store.record_inventory(
                replace(inventory, vms=inventory.vms + tuple(hosts)), now
            )
            seen -= len(hosts)
            running = Counter(v.host for v in inventory.vms if v.power_state == "on")
            self.store.add_samples(
                name,
                [
                    Sample(
                        h.native_id,
                        now,
                        {Signal.VMS: float(running[h.native_id[len(HOST_PREFIX) :]])},
                    )
                    for h in hosts
                    if h.power_state == "on"
                ],
            )
            results[name] = f"{seen} VMs, {len(inventory.hosts)} hosts, " + (
                f"{len(inventory.datastores)} datastores" + (f", {gone} gone" if gone else "")
            )
        self.pace.discovered = now
        self.upload_inventory(now)
        return results

    def collect(self, now: datetime) -> dict[str, int]:
        window = timedelta(seconds=self.policy().sample_interval_s)
        counts: dict[str, int] = {}
        for name in sorted(self.endpoints.all()):
            vms = [s.vm for s in self.store.vms(name) if s.vm.power_state == "on"]
            try:
                samples = self.driver(name).sample(vms, now, window)
            except DriverError as e:
                self.log.warning("sampling %s failed: %s", name, e)
                counts[name] = 0
                continue
            self.store.add_samples(name, samples)
            counts[name] = len(samples)
        self.pace.sampled = now
        return counts

    def run_lifecycle(self, now: datetime) -> RunReport:
        policy = self.policy()
        here = self.notify_here()
        stated = self.reference_now(now)
        report = self.lifecycle.propose(policy, now, notify_here=here, stated_now=stated)
        if here:
            acted = self.lifecycle.act_due(policy, now, stated)
            report.acted, report.held = acted.acted, acted.held
            report.errors += acted.errors
        else:
            # Every proposal still open goes up each run: one that failed to send is sent
            # again, and the cloud drops the ones it has (same decision ids).
            pending = self.store.with_outcome("proposed")
            if pending:
                self.reports.upload(
                    "vm.decision", [d.model_dump(mode="json") for d in pending], now
                )
        self.pace.evaluated = now
        return report

    def step(self, now: datetime | None = None) -> None:
        """One round of whatever is due; the worker calls it every few seconds."""
        now = now or self.clock()
        policy = self.policy()
        every = float(self.settings().get("discover_every_s", 900))
        with self._work_lock:
            if not self.endpoints.all():
                return
            if self.pace.discovered is None or now - self.pace.discovered >= timedelta(
                seconds=every
            ):
                self.discover(now)
            if self.pace.sampled is None or now - self.pace.sampled >= timedelta(
                seconds=policy.sample_interval_s
            ):
                self.collect(now)
            if self.pace.evaluated is None or now - self.pace.evaluated >= timedelta(hours=1):
                self.run_lifecycle(now)
            elif self.notify_here():
                self.lifecycle.act_due(policy, now, self.reference_now(now))
            if FEATURE_ARCHIVE in self.features:
                for line in self.archives.run_due(now):
                    self.log.info("archive: %s", line)
            self.upload_audit()

    def tick(self) -> None:
        super().tick()
        self._serve_answers()

    def round(self) -> None:
        self.step()

    def pause_s(self) -> float:
        return float(self.settings().get("worker_pause_s", WORKER_PAUSE_S))

    def _serve_answers(self) -> None:
        listen = self.settings().get("links", {}).get("listen")
        if not listen or self.answers is not None:
            return
        from .answers import AnswerServer

        host, _, port = str(listen).rpartition(":")
        self.answers = AnswerServer(host or "127.0.0.1", int(port), self.answer)
        self.answers.start()

    def answer(self, token: str) -> str:
        now = self.clock()
        return self.lifecycle.answer(token, now, self.reference_now(now))

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
