"""The agent's loop: poll the link, apply what comes down, run commands once, report back.

Without a docked link the modules still run standalone (their `tick`). With one, each
entry of the sequence is handled in order: a policy is stored and handed to its module; a
command goes through the journal (see `journal.py`), its effect is recorded there and its
result sent as job events. Then one `POST /acks` acknowledges every entry of the answer,
and only then does the agent's sequence move past them. Errors reaching the cloud back off
exponentially with full jitter (tenacity), capped at 15 minutes, and honour `Retry-After`
in both its forms (parsed in `link.py`).

Time: every answer of the cloud carries its time (`Dockyard-Time`). The agent measures its
clock's skew from it (kept in `cloud-clock.json`, logged when it is large, reported with
each poll for the cloud to show, handed to the modules as the cloud's time) and judges a
command's deadline by the time-to-live the cloud gave it (`expires_at` minus the cloud's
time) on its own monotonic clock, never by comparing its wall clock with the cloud's.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import tenacity

from . import clock as clocks
from . import keys
from . import protocol as p
from .crashpoints import crashpoint
from .errors import AgentError, FlowModeForbids, LinkRefused, LinkUnavailable, NotDocked
from .journal import FINAL, Journal
from .link import Link
from .modules import registry
from .modules.base import CommandFailed, Module, ModuleContext, Outcome
from .protocol import vocabulary
from .state import State
from .vault.backends import Backend

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 15 * 60.0
SKEW_WARN_S = 60.0
"""A skew past this is logged (again whenever it moves by as much)."""


class _WaitRetryAfter(tenacity.wait.wait_base):
    """tenacity's full jitter, but never sooner than the cloud's `Retry-After` (capped too)."""

    def __init__(self, base: float, cap: float) -> None:
        self._jitter = tenacity.wait_random_exponential(multiplier=base, max=cap)
        self._cap = cap

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        wait = self._jitter(retry_state)
        failure = retry_state.outcome.exception() if retry_state.outcome else None
        asked = failure.retry_after if isinstance(failure, LinkUnavailable) else None
        return wait if asked is None else max(wait, min(asked, self._cap))


def _worth_retrying(e: BaseException) -> bool:
    """Unreachable or overloaded, or refused for a reason other than who we are."""
    return isinstance(e, LinkUnavailable) or (isinstance(e, LinkRefused) and e.status != 401)


def backoff(
    sleep: Callable[[float], None],
    before_sleep: Callable[[tenacity.RetryCallState], None] | None = None,
    base: float = BACKOFF_BASE_S,
    cap: float = BACKOFF_CAP_S,
) -> tenacity.Retrying:
    """Retry a round against the cloud with exponential back-off and full jitter.

    tenacity rather than our own loop: its `wait_random_exponential` is the "full jitter"
    schedule (a random wait in [0, min(cap, base * 2^n)]), its retry and wait strategies
    are small composable objects, and it is well kept. Each call starts a fresh count, so a
    round that succeeds resets the back-off. Anything not worth retrying (a 401, `Stopping`,
    a bug) is raised as it was.
    """
    return tenacity.Retrying(
        sleep=sleep,
        wait=_WaitRetryAfter(base, cap),
        retry=tenacity.retry_if_exception(_worth_retrying),
        before_sleep=before_sleep,
        reraise=True,
    )


class Stopping(BaseException):
    """Raised by the stop signal's handler to cut a held poll short (and nothing else)."""


def now() -> datetime:
    return datetime.now(UTC)


class Runner:
    def __init__(
        self, state: State, link_name: str = "default", wait_s: float = p.MAX_POLL_WAIT_S
    ) -> None:
        self.state = state
        self.link_name = link_name
        self.wait_s = wait_s
        self.journal = Journal(state)
        self.stop = threading.Event()
        self.link: Link | None = None
        self._key_files = (state.dir / "none", state.dir / "none.next")
        self.tag = ""
        self._polling = False
        self.clock = clocks.from_env()
        self.skew: clocks.Skew | None = None
        self.modules: dict[str, Module] = {}
        for name, cls in registry().items():
            ctx = ModuleContext(
                state.dir / "modules" / name,
                self._flow_mode,
                self._upload,
                clock=self.clock,
                cloud_time=self.cloud_now,
                progress=self._progress,
                vault=self._vault,
            )
            self.modules[name] = cls(ctx)
        self._handlers = {k: (m, h) for m in self.modules.values() for k, h in m.handlers().items()}
        self._policy_owners: dict[str, Module] = {}
        for taker in self.modules.values():
            for kind in taker.policy_kinds:
                other = self._policy_owners.setdefault(kind, taker)
                if other is not taker:
                    raise ValueError(
                        f"policy kind {kind!r} is declared by {other.name} and {taker.name}"
                    )
        record = state.link(link_name)
        if record is not None:
            self.skew = clocks.Skew.load(state.dir, self.clock())
            for module, features in state.features(link_name).items():
                if module in self.modules:
                    self.modules[module].set_features(frozenset(features))
            # A policy arrives once; after a restart the modules get it from the state.
            for row in state.policies(link_name):
                owner = self._policy_owners.get(str(row["kind"]))
                if owner is not None:
                    owner.on_policy(row["kind"], row["name"], row["version"], row["document"])
            self.link = Link(record.url, ca_bundle=record.ca_bundle)
            self.link.authenticate_as(
                record.agent_id, keys.load(Path(record.key_file)), record.token_url
            )
            self._key_files = Path(record.key_file), Path(record.key_file + ".next")

    # --- the loop ------------------------------------------------------------------------

    def request_stop(self) -> None:
        """From a signal handler: stop after the current entry; a held poll ends at once."""
        self.stop.set()
        if self._polling:
            raise Stopping

    def run(self) -> int:
        """Run until stopped; returns a process exit code."""
        retrying = backoff(sleep=self._pause, before_sleep=self._log_retry)
        while not self.stop.is_set():
            try:
                retrying(self._round)
            except Stopping:
                break
            except LinkRefused as e:  # a 401: the only refusal not retried
                if self._settle_rotation():
                    continue
                log.error("the cloud no longer accepts this agent: %s", e.message)
                return 3
        return 0

    def _round(self) -> None:
        """The modules' tick, then (docked) the reports and one poll."""
        self._tick_modules()
        if self.link is None:
            self.stop.wait(5.0)
            return
        self.flush_reports()
        self.poll_once()

    def _pause(self, seconds: float) -> None:
        """The back-off's sleep: cut short, and the loop left, when a stop is asked for."""
        if self.stop.wait(seconds):
            raise Stopping

    @staticmethod
    def _log_retry(retry_state: tenacity.RetryCallState) -> None:
        failure = retry_state.outcome.exception() if retry_state.outcome else None
        delay = retry_state.next_action.sleep if retry_state.next_action else 0.0
        if isinstance(failure, LinkUnavailable):
            log.warning("cloud unavailable (%s); retrying in %.1fs", failure, delay)
        else:
            log.error("%s; retrying in %.1fs", failure, delay)

    def _settle_rotation(self) -> bool:
        """After a refusal: if a key rotation was cut off, the cloud may hold the new key."""
        if self.link is None or not self._key_files[1].exists():
            return False
        try:
            keys.settle_rotation(self.link, *self._key_files)
        except LinkUnavailable:
            return True  # the loop's back-off handles it on the next round
        log.warning("finished a key rotation that was cut off")
        return True

    def _tick_modules(self) -> None:
        for module in self.modules.values():
            try:
                module.tick()
            except Exception:
                log.exception("module %s: tick failed", module.name)

    def _record(self) -> p.FlowMode | None:
        record = self.state.link(self.link_name)
        return record.flow_mode if record else None

    def _flow_mode(self) -> p.FlowMode | None:
        return self._record()

    def cloud_now(self) -> datetime | None:
        """The cloud's time as this agent estimates it; None until measured (or undocked)."""
        if self.skew is None or self.link is None:
            return None
        return self.skew.cloud_now(self.clock())

    def _measure_skew(self) -> None:
        """From the last answer's `Dockyard-Time`: the agent's clock minus the cloud's, with
        the time since the answer came taken off."""
        if self.link is None or self.link.cloud_time is None:
            return
        cloud, received = self.link.cloud_time
        mine = self.clock()
        seconds = (mine - cloud).total_seconds() - (time.monotonic() - received)
        before = self.skew.seconds if self.skew else 0.0
        if self.skew is None or abs(seconds - before) >= 1.0:
            if abs(seconds) >= SKEW_WARN_S and abs(seconds - before) >= SKEW_WARN_S:
                log.warning(
                    "this agent's clock is %.0f s %s of the cloud's; notices and deadlines"
                    " follow the cloud's",
                    abs(seconds),
                    "ahead" if seconds > 0 else "behind",
                )
            self.skew = clocks.Skew(round(seconds, 3), mine)
            self.skew.save(self.state.dir)

    def poll_once(self, wait: float | None = None) -> p.PollResponse:
        record = self.state.link(self.link_name)
        if record is None or self.link is None:
            raise NotDocked(self.link_name)
        self._polling = True
        try:
            if self.stop.is_set():
                raise Stopping
            answer = self.link.poll(
                record.last_seq,
                self.wait_s if wait is None else wait,
                self.tag,
                round(self.skew.seconds) if self.skew else None,
            )
        finally:
            self._polling = False
        if answer.flow_mode != record.flow_mode:
            log.info("flow mode is now %s", answer.flow_mode.value)
            self.state.set_flow_mode(self.link_name, answer.flow_mode)
        self._measure_skew()
        stamped = self.link.cloud_time
        self._apply_features(answer.features)
        # One ack for the whole answer, sent when every entry's effect and result are
        # recorded, and the sequence moved on only after it: a death before the ack has
        # the entries delivered again, and the journal keeps each command's effect once.
        acks: list[p.Ack] = []
        for entry in answer.entries:
            if isinstance(entry, p.PolicyEntry):
                self._apply_policy(entry)
                acks.append(p.Ack(seq=entry.seq))
            else:
                acks.append(self._run_command(entry, self._deadline(entry, stamped)))
        if acks:
            self.link.ack(acks)
            crashpoint("after_ack", self.state.dir)
        self.state.advance(self.link_name, answer.last_seq)
        self.tag = answer.tag
        return answer

    # --- what comes down -----------------------------------------------------------------

    def _apply_features(self, unlocked: dict[str, list[str]]) -> None:
        for name, module in self.modules.items():
            features = sorted(unlocked.get(name, []))
            module.set_features(frozenset(features))
            self.state.set_features(self.link_name, name, features)

    def _apply_policy(self, entry: p.PolicyEntry) -> None:
        module = self._policy_owners.get(entry.policy_kind)
        if module is None:
            log.warning("policy %s: no module here takes kind %r", entry.name, entry.policy_kind)
        if entry.assigned:
            self.state.put_policy(
                self.link_name,
                str(entry.policy_id),
                entry.policy_kind,
                entry.name,
                entry.version,
                entry.document,
            )
        else:
            self.state.drop_policy(self.link_name, str(entry.policy_id))
        if module is not None:
            module.on_policy(
                entry.policy_kind,
                entry.name,
                entry.version,
                entry.document if entry.assigned else None,
            )

    @staticmethod
    def _deadline(command: p.CommandEntry, stamped: tuple[datetime, float] | None) -> float | None:
        """When the command lapses on this agent's monotonic clock: the time-to-live the
        cloud left it when it answered, counted from when the answer came."""
        if stamped is None:
            return None
        cloud, received = stamped
        return received + (command.expires_at - cloud).total_seconds()

    def _run_command(self, command: p.CommandEntry, deadline: float | None = None) -> p.Ack:
        """Run (or settle, after a restart) one command and report its result; the ack
        to send for it once the whole answer is handled."""
        assert self.link is not None
        cid = str(command.command_id)
        seen = self.journal.get(cid)
        if seen is None or seen.state not in FINAL:
            target = self._handlers.get(command.name)
            if target is None:
                self.journal.start(
                    self.link_name,
                    cid,
                    command.seq,
                    str(command.job_id),
                    command.name,
                    command.args,
                )
                self.journal.finish(cid, "rejected", "unknown_command")
                self._report(cid)
                return p.Ack(seq=command.seq, outcome=p.AckOutcome.REJECTED, code="unknown_command")
            module, handler = target
            if seen is None:
                self.journal.start(
                    self.link_name,
                    cid,
                    command.seq,
                    str(command.job_id),
                    command.name,
                    command.args,
                )
                crashpoint("after_journal_start", self.state.dir)
                self._execute(cid, command, handler, deadline)
            else:
                happened = module.reconcile(command)
                if happened is True:
                    self.journal.finish(cid, "done", "ok", "completed before a restart")
                elif happened is False:
                    self._execute(cid, command, handler, deadline)
                else:
                    self.journal.finish(cid, "failed", "interrupted", "interrupted by a restart")
        self._report(cid)
        return p.Ack(seq=command.seq)

    def _execute(
        self, cid: str, command: p.CommandEntry, handler: object, deadline: float | None
    ) -> None:
        assert callable(handler)
        # Without the cloud's time (an older cloud) the wall clock is all there is.
        lapsed = (
            time.monotonic() > deadline
            if deadline is not None
            else command.expires_at < self.clock()
        )
        if lapsed:
            self.journal.finish(cid, "rejected", "expired")
            return
        try:
            outcome: Outcome = handler(command)
        except CommandFailed as e:
            crashpoint("after_effect", self.state.dir)
            self.journal.finish(cid, "failed", e.code, e.detail or None)
            return
        except Exception as e:
            log.exception("command %s (%s) raised", cid, command.name)
            self.journal.finish(cid, "failed", "agent_error", f"{type(e).__name__}: {e}")
            return
        crashpoint("after_effect", self.state.dir)
        self.journal.finish(cid, "done", outcome.code, outcome.detail)
        crashpoint("after_journal_done", self.state.dir)

    # --- what goes up --------------------------------------------------------------------

    def _report(self, cid: str) -> None:
        """Send a finished command's result as job events, once (retried until it lands)."""
        assert self.link is not None
        entry = self.journal.get(cid)
        if entry is None or entry.reported or entry.state not in FINAL:
            return
        mode = self._flow_mode() or p.FlowMode.CONFIG
        detail = entry.detail if mode.allows(p.FlowMode.METADATA) else None
        kind = p.JobEventKind.SUCCEEDED if entry.state == "done" else p.JobEventKind.FAILED
        code = entry.result_code if entry.result_code else None
        module = entry.name.split(".", 1)[0]
        if mode is p.FlowMode.CONFIG and not vocabulary.fits([code], module=module):
            # A driver's own wording (or a name in it) must not go up: config mode is closed.
            log.warning("job %s: code %r is not declared; sent as undeclared", entry.job_id, code)
            code = vocabulary.CommonCode.UNDECLARED.value
        events = [
            p.JobEvent(kind=p.JobEventKind.STARTED, at=now()),
            p.JobEvent(kind=kind, at=now(), code=code, detail=detail[:2000] if detail else None),
        ]
        try:
            self.link.job_events(entry.job_id, events)
        except LinkRefused as e:
            if e.status not in (403, 404):
                raise
            log.warning("job %s: result refused (%s); not retried", entry.job_id, e.message)
        self.journal.mark_reported(cid)

    def _vault(self, name: str) -> Backend:
        from .vault.brokered import BrokeredBackend

        mode = self._flow_mode()
        if mode is None or self.link is None:
            raise FlowModeForbids(f"standalone: there is no cloud storage for {name!r}")
        if not mode.allows(p.FlowMode.DATA):
            raise FlowModeForbids(f"flow mode {mode.value} keeps data on this host")
        return BrokeredBackend(self.link, name)

    def _progress(self, job: uuid.UUID, fraction: float, detail: str | None) -> None:
        if self.link is None:
            return  # standalone: no one to tell
        mode = self._flow_mode() or p.FlowMode.CONFIG
        words = detail[:2000] if detail and mode.allows(p.FlowMode.METADATA) else None
        event = p.JobEvent(
            kind=p.JobEventKind.PROGRESS,
            at=now(),
            progress=min(1.0, max(0.0, fraction)),
            detail=words,
        )
        try:
            self.link.job_events(job, [event])
        except AgentError as e:
            log.debug("job %s: progress not sent (%s)", job, e)

    def flush_reports(self) -> None:
        for entry in self.journal.unreported(self.link_name):
            self._report(entry.command_id)

    def _upload(self, batch: p.MetadataBatch) -> None:
        mode = self._flow_mode()
        if mode is None or self.link is None:
            raise FlowModeForbids("standalone: there is no cloud to send metadata to")
        if not mode.allows(p.FlowMode.METADATA) and not vocabulary.batch_fits_config(batch):
            raise FlowModeForbids(f"flow mode {mode.value} keeps metadata on this host")
        self.link.metadata(batch)
