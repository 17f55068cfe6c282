"""The module's own work and its pace: discovery, sampling, the life cycle run (propose;
standalone also notify and act), the archive feature's due VMs, each when it is due by the
module's clock, in rounds on the module's thread (`BackgroundModule`), so a slow vCenter
never holds up the agent's poll, and a held poll never delays a sample. The answer links'
server starts on the runner's tick once the settings name where it listens.

A mixin of `VmModule` (module.py): a round reaches nearly every part of the module, so it
works on the module's parts directly rather than through a collaborator holding them all.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ...clock import Clock
from ...protocol import FlowMode
from ...protocol.vm import Signal
from ..base import BackgroundModule, ModuleContext
from .archiving import FEATURE as FEATURE_ARCHIVE
from .archiving import ArchiveService
from .drivers.base import DriverError, Sample
from .endpoints import Endpoints
from .lifecycle import Lifecycle, RunReport
from .pool import DriverPool
from .reports import Reports, host_rows
from .settings import Settings
from .store import HOST_PREFIX, VmStore

if TYPE_CHECKING:
    from .answers import AnswerServer

WORKER_PAUSE_S = 5.0


@dataclass
class Pace:
    """When each kind of work last ran, by the module's clock."""

    discovered: datetime | None = None
    sampled: datetime | None = None
    evaluated: datetime | None = None


class Rounds(BackgroundModule):
    # The module's parts a round uses, made by VmModule.__init__.
    clock: Clock
    store: VmStore
    endpoints: Endpoints
    config: Settings
    drivers: DriverPool
    reports: Reports
    lifecycle: Lifecycle
    archives: ArchiveService

    def __init__(self, ctx: ModuleContext) -> None:
        super().__init__(ctx)
        self.pace = Pace()
        self._work_lock = threading.Lock()
        self.answers: AnswerServer | None = None

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
                driver = self.drivers.driver(name)
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
        self.reports.upload_inventory(now)
        return results

    def collect(self, now: datetime) -> dict[str, int]:
        window = timedelta(seconds=self.config.policy().sample_interval_s)
        counts: dict[str, int] = {}
        for name in sorted(self.endpoints.all()):
            vms = [s.vm for s in self.store.vms(name) if s.vm.power_state == "on"]
            try:
                samples = self.drivers.driver(name).sample(vms, now, window)
            except DriverError as e:
                self.log.warning("sampling %s failed: %s", name, e)
                counts[name] = 0
                continue
            self.store.add_samples(name, samples)
            counts[name] = len(samples)
        self.pace.sampled = now
        return counts

    def run_lifecycle(self, now: datetime) -> RunReport:
        policy = self.config.policy()
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
        policy = self.config.policy()
        every = float(self.config.settings().get("discover_every_s", 900))
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
            self.reports.upload_audit()

    def tick(self) -> None:
        super().tick()
        self._serve_answers()

    def round(self) -> None:
        self.step()

    def pause_s(self) -> float:
        return float(self.config.settings().get("worker_pause_s", WORKER_PAUSE_S))

    def _serve_answers(self) -> None:
        listen = self.config.settings().get("links", {}).get("listen")
        if not listen or self.answers is not None:
            return
        from .answers import AnswerServer

        host, _, port = str(listen).rpartition(":")
        self.answers = AnswerServer(host or "127.0.0.1", int(port), self.answer)
        self.answers.start()

    def answer(self, token: str) -> str:
        now = self.clock()
        return self.lifecycle.answer(token, now, self.reference_now(now))
