"""From idle to off: evaluate, decide, give notice, and act, with a safety net at each step.

Who does what depends on how the agent runs (DESIGN.md, "Who decides what"):
- standalone, or docked in `config` flow mode: this agent sends the notice and, when the
  notice period has passed unanswered, shuts the VM down itself;
- docked with `metadata` or `data`: it only proposes (a decision goes up); the cloud sends
  the notice and later issues a `vm.power` command, which arrives here like any other.

Whichever way an action comes (a notice that ran out, a cloud command, the shell), `power()`
is the one door, and it refuses: a VM on the local never-act list or carrying the policy's
exclusion tag; a VM whose host is in maintenance, or a host in maintenance, read fresh from
the hypervisor; and any action past the budget (`budget_share` of the VMs in scope per
`budget_window_hours`, at least one), counted in the module's SQLite so worker rounds,
restarts, the shell and the cloud all draw on the same budget. Past it, an approval
(`vm approve`, or the cloud's `vm.approve`) pays for one more action each; the policy's
contact is told once per window. Every refusal and approval is written to the audit trail.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ...protocol import links
from ...protocol import notices as rules
from ...protocol.vm import (
    THRESHOLD_SIGNALS,
    IdleState,
    PowerAction,
    Statistic,
    VmLifecyclePolicy,
    notice_due,
)
from ...protocol.vm import Decision as DecisionRecord
from . import idleness, notices
from .drivers.base import SCHEDULED_EVENT_TAG, Driver, DriverError, HostInfo, VmGone, VmInfo
from .store import HOST_PREFIX, Notice, StoredVm, VmStore, day_of, day_start, is_host

PROPOSAL_STANDS = timedelta(days=7)
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


QUANTILES = {Statistic.P95: 0.95, Statistic.P99: 0.99}


class Refused(DriverError):
    """The safety net said no: the message names which part of it."""

    def __init__(self, message: str, code: str = "refused_by_safety_net") -> None:
        super().__init__(code, message)


class OverBudget(Refused):
    """The window's budget is spent and no approval is left: the action waits."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "over_budget")


class InMaintenance(Refused):
    def __init__(self, message: str) -> None:
        super().__init__(message, "host_in_maintenance")


def maintenance(
    vm: StoredVm, hosts: dict[str, HostInfo], fresh: VmInfo | None = None
) -> str | None:
    """Why this VM (or host) is in maintenance, or None; `hosts` by native id, `fresh` the
    VM as the hypervisor shows it now (else as stored). A VM AWS has scheduled an event
    for is treated like one whose host is in maintenance."""
    if is_host(vm.vm.native_id):
        host = hosts.get(vm.vm.native_id.removeprefix(HOST_PREFIX))
        in_maintenance = host.maintenance if host else vm.vm.tags.get("maintenance") == "yes"
        return "this host is in maintenance" if in_maintenance else None
    host = hosts.get(vm.vm.host or "")
    if host is not None and host.maintenance:
        return f"its host {host.name} is in maintenance"
    scheduled = (fresh or vm.vm).tags.get(SCHEDULED_EVENT_TAG)
    if scheduled:
        return f"{scheduled}: treated as maintenance"
    return None


def owner_of(vm: StoredVm, policy: VmLifecyclePolicy) -> str | None:
    """The tag the policy names, then an `owner=` line of the annotation, then the default."""
    tags = vm.vm.tags
    candidate = tags.get(policy.owner_tag, "").strip()
    if not candidate:
        for line in tags.get("annotation", "").splitlines():
            key, sep, value = line.replace(":", "=", 1).partition("=")
            if sep and key.strip() == policy.owner_tag:
                candidate = value.strip()
                break
    if candidate and EMAIL.match(candidate):
        return candidate
    return policy.default_contact


def exclusion(
    vm: StoredVm, policy: VmLifecyclePolicy, never_act: dict[tuple[str, str], str]
) -> str | None:
    """Why this VM must not be acted on, or None."""
    for key in (vm.vm.native_id, vm.vm.name):
        reason = never_act.get((vm.endpoint, key)) or never_act.get(("*", key))
        if reason is not None:
            return f"on this agent's never-act list ({reason})"
    value = vm.vm.tags.get(policy.exclusion_tag)
    if value is not None and value.strip().lower() not in ("false", "no", "0"):
        return f"carries the exclusion tag {policy.exclusion_tag}"
    return None


@dataclass
class RunReport:
    evaluated: int = 0
    idle: int = 0
    proposed: list[DecisionRecord] = field(default_factory=list)
    acted: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Lifecycle:
    def __init__(
        self,
        store: VmStore,
        driver: Callable[[str], Driver],
        endpoints: Callable[[], list[str]],
        link_key: bytes,
        link_base: Callable[[], str],
        smtp: Callable[[], notices.SmtpConfig | None],
        bmc: Callable[[str, StoredVm], dict[str, Any] | None] = lambda endpoint, host: None,
    ) -> None:
        self.bmc = bmc
        """The Redfish configuration the endpoint maps a physical host to, if any."""
        self.store = store
        self.driver = driver
        self.endpoints = endpoints
        self.link_key = link_key
        self.link_base = link_base
        self.smtp = smtp

    def in_scope(self, policy: VmLifecyclePolicy) -> list[str]:
        """The endpoints `policy` covers among those the module lets it see (docked, only
        the ones the local policy covers)."""
        return [n for n in self.endpoints() if policy.covers(n)]

    # --- evaluation ----------------------------------------------------------------------

    def evaluate(
        self, policy: VmLifecyclePolicy, now: datetime
    ) -> list[tuple[StoredVm, dict[str, Any]]]:
        """Judges every powered-on VM in scope and stores each evaluation; returns the idle
        ones, after the exclusions, each with its evaluation."""
        today = day_of(now)
        never_act = self.store.never_act()
        idle: list[tuple[StoredVm, dict[str, Any]]] = []
        wanted = {
            signal: QUANTILES[stat]
            for signal, stat in policy.statistics.items()
            if stat in QUANTILES and signal in THRESHOLD_SIGNALS
        }
        for endpoint in self.in_scope(policy):
            readable = type(self.driver(endpoint)).signals
            first = today - policy.idle_days
            histories = self.store.histories(endpoint, first, today)
            figures = self.store.quantiles(endpoint, first, today, wanted)
            hosts = {h.native_id: h for h in self.store.hosts(endpoint)}
            rows = []
            for vm in self.store.vms(endpoint, kind="all"):
                if vm.vm.power_state != "on":
                    continue
                quiet = day_of(vm.quiet_from) + 1 if vm.quiet_from else None
                history = idleness.with_statistics(
                    histories.get(vm.vm.native_id, {}), figures.get(vm.vm.native_id, {})
                )
                host = is_host(vm.vm.native_id)
                result = (
                    idleness.evaluate_host(policy, history, today, quiet)
                    if host
                    else idleness.evaluate(policy, readable, history, today, quiet)
                )
                state = result.state
                reasons = list(result.reasons)
                reportable_only = (
                    host and state == IdleState.IDLE and self.bmc(endpoint, vm) is None
                )
                if reportable_only:
                    reasons.append("no Redfish power interface is configured: reported only")
                why_not = exclusion(vm, policy, never_act)
                if why_not is not None:
                    reasons.append(f"excluded: {why_not}")
                    state = IdleState.EXCLUDED if state == IdleState.IDLE else state
                servicing = maintenance(vm, hosts)
                if servicing is not None:
                    reasons.append(f"not judged: {servicing}")
                    state = IdleState.MAINTENANCE
                last_active = (
                    day_start(result.last_active_day + 1) if result.last_active_day else None
                )
                evaluation = {
                    "state": state.value,
                    "at": now.isoformat(),
                    "window": [
                        day_start(result.first_day).isoformat(),
                        day_start(result.last_day + 1).isoformat(),
                    ],
                    "signals": [s.value for s in result.signals],
                    "statistics": {s.value: policy.statistic(s).value for s in result.signals},
                    "missing_days": result.missing_days,
                    "reasons": reasons,
                    "thresholds": {
                        s.value: getattr(policy.thresholds, s.value)
                        for s in result.signals
                        if s in THRESHOLD_SIGNALS
                    },
                    "days": idleness.judged_days(history, result.first_day, result.last_day),
                }
                rows.append((endpoint, vm.vm.native_id, last_active, json.dumps(evaluation)))
                if state == IdleState.IDLE and not reportable_only:
                    idle.append((vm, evaluation))
            self.store.set_evaluations(rows)
        return idle

    # --- proposals and notices -----------------------------------------------------------

    def propose(
        self,
        policy: VmLifecyclePolicy,
        now: datetime,
        notify_here: bool,
        stated_now: datetime | None = None,
    ) -> RunReport:
        """Evaluates, then makes one decision per idle VM that has none open. With
        `notify_here`, this agent gives the notice, its due time computed once from
        `stated_now` (docked: the cloud's time; standalone: `now`); otherwise the
        decisions go up."""
        report = RunReport()
        candidates = self.evaluate(policy, now)
        report.idle = len(candidates)
        open_vms = {(n.endpoint, n.native_id) for n in self.store.notices(open_only=True)}
        for vm, evaluation in candidates:
            key = (vm.endpoint, vm.vm.native_id)
            if key in open_vms or self._proposed_open(vm, now):
                continue
            window = evaluation["window"]
            decision = DecisionRecord(
                decision_id=str(uuid.uuid4()),
                endpoint=vm.endpoint,
                native_id=vm.vm.native_id,
                state=IdleState.IDLE,
                window_start=datetime.fromisoformat(window[0]),
                window_end=datetime.fromisoformat(window[1]),
                signals=list(policy.signals),
                reasons=list(evaluation["reasons"]),
                missing_days=int(evaluation["missing_days"]),
                proposed_action=policy.action,
                owner=owner_of(vm, policy),
                notice_hours=policy.notice_hours,
                vm_name=vm.vm.name,
                statistics={s: policy.statistic(s) for s in policy.signals},
            )
            if notify_here:
                self.store.record_decision(decision, "notice_pending")
                self._give_notice(policy, vm, decision, now, report, stated_now or now)
            else:
                self.store.record_decision(decision, "proposed")
            report.proposed.append(decision)
        return report

    def _proposed_open(self, vm: StoredVm, now: datetime) -> bool:
        """A proposal the cloud has not closed stands for a week; then it is made again
        (the cloud may have had nobody to mail, or lost it)."""
        latest = self.store.decisions(vm.endpoint, vm.vm.native_id, limit=1)
        if not latest or latest[0][1] != "proposed":
            return False
        return now - latest[0][0].window_end < PROPOSAL_STANDS

    def _give_notice(
        self,
        policy: VmLifecyclePolicy,
        vm: StoredVm,
        decision: DecisionRecord,
        now: datetime,
        report: RunReport,
        stated_now: datetime,
    ) -> None:
        notice_id = str(uuid.uuid4())
        due = notice_due(stated_now, policy.notice_hours)
        recipient = decision.owner
        self.store.add_notice(
            Notice(
                notice_id,
                decision.decision_id,
                vm.endpoint,
                vm.vm.native_id,
                recipient,
                None,
                due,
                None,
                None,
                None,
                None,
            )
        )
        if recipient is None:
            self.store.update_notice(
                notice_id, error="no owner tag and no default contact: nobody to notify"
            )
            report.errors.append(f"{vm.vm.name}: nobody to notify, not acted on")
            return
        config = self.smtp()
        if config is None:
            self.store.update_notice(notice_id, error="no SMTP server configured")
            report.errors.append(f"{vm.vm.name}: no SMTP server configured, not acted on")
            return
        lifetime = rules.link_lifetime(policy.notice_hours)
        where = f"{vm.endpoint}/{vm.vm.native_id}"
        urls = {
            answer: f"{self.link_base().rstrip('/')}{rules.ANSWER_PATH}?t="
            + links.sign(
                self.link_key, notice_id, decision.decision_id, where, answer, now, lifetime
            )
            for answer in links.ANSWERS
        }
        message = notices.compose(
            config.sender,
            recipient,
            rules.notice_text(
                vm.vm.name,
                where,
                policy.action.value,
                due,
                decision.reasons,
                urls["skip"],
                urls["delay"],
            ),
        )
        try:
            notices.send(config, message)
        except notices.MailFailed as e:
            self.store.update_notice(notice_id, error=str(e))
            report.errors.append(f"{vm.vm.name}: {e}")
            return
        self.store.update_notice(notice_id, sent_at=now)

    def answer(self, token: str, now: datetime, stated_now: datetime | None = None) -> str:
        """A skip or delay link was followed; returns a sentence for the person who did.
        A refused link is written to the audit trail (replays and misbound links are how
        someone probing the links shows up)."""
        try:
            return self._answer(token, now, stated_now or now)
        except links.BadLink as e:
            self.store.add_audit("vm.link", None, "refused", now, reason=str(e))
            raise

    def _answer(self, token: str, now: datetime, stated_now: datetime) -> str:
        claims = links.verify(self.link_key, token, now)
        notice = self.store.notice(claims.notice_id)
        where = f"{notice.endpoint}/{notice.native_id}" if notice else None
        if notice is None or notice.decision_id != claims.decision_id or where != claims.vm:
            raise links.BadLink("this link does not belong to a notice of ours")
        rules.check_answerable(_state_of(notice))
        if not self.store.use_nonce(claims.nonce, now):
            raise links.BadLink("this link has already been used")
        vm = self.store.vm(notice.endpoint, notice.native_id)
        name = vm.vm.name if vm else notice.native_id
        self.store.add_audit(f"vm.link.{claims.answer}", where, "ok", now)
        if claims.answer == "skip":
            self.store.update_notice(notice.notice_id, answer="skip", answered_at=now)
            self.store.set_outcome(notice.decision_id, "skipped")
            self.store.set_quiet_from(notice.endpoint, notice.native_id, now)
            return rules.skipped_reply(name)
        due = rules.delayed_until(notice.due_at, stated_now)
        self.store.update_notice(notice.notice_id, answer="delay", answered_at=now, due_at=due)
        return rules.delayed_reply(name, due)

    # --- acting --------------------------------------------------------------------------

    def act_due(
        self, policy: VmLifecyclePolicy, now: datetime, stated_now: datetime | None = None
    ) -> RunReport:
        """Shuts down the VMs whose notice period passed unanswered, as far as the budget
        (which `power` keeps) allows; the rest stay open for a later round. A notice runs
        out by the clock it was stated in (`stated_now`: docked, the cloud's), never
        before the time its mail gave."""
        report = RunReport()
        stated = stated_now or now
        due = [
            n
            for n in self.store.notices(open_only=True)
            if n.due_at <= stated and n.sent_at is not None and n.error is None
        ]
        # Held VMs wait without a hypervisor call or an audit row per worker round: the
        # hold is written once per window (`_tell_once`) and in the `held` mark.
        room = self.room(policy, now) if due else 0
        for notice in due:
            vm = self.store.vm(notice.endpoint, notice.native_id)
            if vm is None or vm.gone_at is not None:
                self._close(notice, now, "gone", "the VM no longer exists")
                continue
            state = (vm.evaluation or {}).get("state")
            if state in (IdleState.ACTIVE.value, IdleState.EXCLUDED.value):
                self._close(notice, now, f"{state}_again", f"{state} when the notice ran out")
                continue
            if state != IdleState.IDLE.value:
                # Samples stopped, or the host went into maintenance: wait, never guess.
                report.errors.append(f"{vm.vm.name}: {state or 'unknown'} now, waiting")
                continue
            if report.held or room <= len(report.acted):  # spent: the rest wait, unasked
                report.held.append(vm.vm.name)
                continue
            try:
                state = self.power(policy, notice.endpoint, notice.native_id, policy.action, now)
            except OverBudget:
                report.held.append(vm.vm.name)
                continue
            except DriverError as e:
                self.store.update_notice(notice.notice_id, error=f"{e.code}: {e}")
                self.store.set_outcome(notice.decision_id, f"failed: {e.code}")
                report.errors.append(f"{vm.vm.name}: {e}")
                continue
            self.store.update_notice(notice.notice_id, acted_at=now)
            self.store.set_outcome(notice.decision_id, f"done: {state}")
            report.acted.append(vm.vm.name)
        if report.held:
            budget, in_scope, _ = self.budget(policy, now)
            self._tell_once(policy, now, report.held, budget, in_scope)
            self.store.set_mark(
                "held",
                json.dumps(
                    {"at": now.isoformat(), "cap": budget, "in_scope": in_scope, "vms": report.held}
                ),
            )
        return report

    def budget(
        self, policy: VmLifecyclePolicy, now: datetime, endpoints: list[str] | None = None
    ) -> tuple[int, int, int]:
        """(budget, VMs in scope, actions already taken in the window)."""
        endpoints = self.in_scope(policy) if endpoints is None else endpoints
        in_scope = sum(len(self.store.vms(e)) for e in endpoints)
        since = now - timedelta(hours=policy.budget_window_hours)
        return policy.budget(in_scope), in_scope, self.store.actions_since(since, endpoints)

    def room(
        self, policy: VmLifecyclePolicy, now: datetime, endpoints: list[str] | None = None
    ) -> int:
        """How many more actions the window's budget and the approvals allow now: a read,
        so a spent budget is seen without asking a hypervisor (`reserve_action` decides)."""
        budget, _, used = self.budget(policy, now, endpoints)
        return max(0, budget - used) + self.store.approvals()

    def _over_budget(
        self, policy: VmLifecyclePolicy, now: datetime, vm: StoredVm, budget: int, in_scope: int
    ) -> OverBudget:
        self._tell_once(policy, now, [vm.vm.name], budget, in_scope)
        return OverBudget(
            f"{vm.vm.name}: the budget of {budget} action(s) per "
            f"{policy.budget_window_hours:g} h ({policy.budget_share:.0%} of {in_scope}"
            " VMs in scope) is spent; approve more with `dockyard-agent vm approve N`"
        )

    def _close(self, notice: Notice, now: datetime, outcome: str, why: str) -> None:
        self.store.update_notice(notice.notice_id, acted_at=now, error=why)
        self.store.set_outcome(notice.decision_id, outcome)

    def archive_lock(self, endpoint: str, native_id: str) -> str | None:
        """The archive's own lock on starting a VM: no power-on through this module while
        its files are going to the vault, are there, or are coming back (the hypervisor's
        fence, a template or libvirt metadata, is the other half)."""
        with self.store.tx() as db:
            row = db.execute(
                "SELECT state FROM life WHERE endpoint = ? AND native_id = ?",
                (endpoint, native_id),
            ).fetchone()
        state = row[0] if row else None
        return state if state in ("archiving", "archived", "restoring", "restore_failed") else None

    def power(
        self,
        policy: VmLifecyclePolicy,
        endpoint: str,
        native_id: str,
        action: PowerAction,
        now: datetime,
        source: str = "notice",
    ) -> str:
        """Every power change goes through here, so the safety net is never bypassed:
        never-act and exclusion, maintenance (read fresh), then the budget. A refusal is
        audited and raised; the effect happens only with a slot of the budget reserved."""
        vm = self.store.vm(endpoint, native_id)
        if vm is None or vm.gone_at is not None:
            raise VmGone(native_id)
        target = f"{endpoint}/{native_id}"
        if action == PowerAction.POWER_ON:
            held = self.archive_lock(endpoint, native_id)
            if held is not None:
                raise DriverError(
                    "vm_archived", f"{vm.vm.name} is {held}: restore it first (restoreVm)"
                )
            return self._change(vm, action, now)
        try:
            why_not = exclusion(vm, policy, self.store.never_act())
            if why_not is not None:
                raise Refused(f"{vm.vm.name} {why_not}: not acted on")
            endpoints = self.in_scope(policy)
            if endpoint not in endpoints:
                if source != "shell" and endpoint not in self.endpoints():
                    raise Refused(
                        f"{vm.vm.name}: endpoint {endpoint} is outside the agent's local "
                        "policy: not acted on"
                    )
                endpoints.append(endpoint)  # counted with the policy's, never apart
            budget, in_scope, used = self.budget(policy, now, endpoints)
            if used >= budget and self.store.approvals() <= 0:  # before the hypervisor is asked
                raise self._over_budget(policy, now, vm, budget, in_scope)
            since = now - timedelta(hours=policy.budget_window_hours)
            fresh = self.driver(endpoint).discover()
            now_vm = next((v for v in fresh.vms if v.native_id == native_id), None)
            servicing = maintenance(vm, {h.native_id: h for h in fresh.hosts}, now_vm)
            if servicing is not None:
                raise InMaintenance(f"{vm.vm.name}: {servicing}: not acted on")
            now_state = next((v.power_state for v in fresh.vms if v.native_id == native_id), None)
            if now_state is not None and now_state != "on" and not is_host(native_id):
                return now_state  # already off or suspended: nothing to change, nothing spent
            reserved = self.store.reserve_action(
                endpoint, native_id, action.value, now, since, endpoints, budget
            )
            if reserved is None:  # another round or process took the last slot meanwhile
                raise self._over_budget(policy, now, vm, budget, in_scope)
        except Refused as e:
            self.store.add_audit(
                "vm.power", target, "refused", now, code=e.code, reason=str(e), source=source
            )
            raise
        action_id, paid_by = reserved
        try:
            state = self._change(vm, action, now)
        except DriverError:
            self.store.release_action(action_id)
            raise
        self.store.add_audit(
            "vm.power", target, "ok", now, action=action.value, paid_by=paid_by, source=source
        )
        return state

    def _change(self, vm: StoredVm, action: PowerAction, now: datetime) -> str:
        endpoint, native_id = vm.endpoint, vm.vm.native_id
        try:
            if is_host(native_id):
                from .drivers.redfish import RedfishPower

                config = self.bmc(endpoint, vm)
                if config is None:
                    raise DriverError(
                        "no_power_interface", f"{vm.vm.name}: no Redfish BMC is configured for it"
                    )
                bmc = RedfishPower(f"{endpoint}/{vm.vm.name}", config)
                try:
                    state = bmc.power(action)
                finally:
                    bmc.close()
            else:
                state = self.driver(endpoint).power(vm.vm, action)
        except VmGone:
            self.store.mark_gone(endpoint, native_id, now)
            raise
        self.store.set_power(endpoint, native_id, state, now)
        if action == PowerAction.POWER_ON:
            self.store.set_quiet_from(endpoint, native_id, now)
        return state

    def _tell_once(
        self, policy: VmLifecyclePolicy, now: datetime, held: list[str], budget: int, in_scope: int
    ) -> None:
        """The policy's contact hears once per window that actions wait for an approval:
        the window slides as the budget's does, so a hold that spans midnight of some fixed
        calendar is told once, and a hold a full window after the last telling is told again."""
        told = self.store.mark("budget_told")
        try:
            last = datetime.fromisoformat(told) if told else None
        except ValueError:  # a mark from before the window slid (an epoch bucket number)
            last = None
        if last is not None and now - last < timedelta(hours=policy.budget_window_hours):
            return
        self.store.set_mark("budget_told", now.isoformat())
        config, to = self.smtp(), policy.default_contact
        outcome, reason = "ok", ""
        if config is None or to is None:
            outcome, reason = "not_sent", "no SMTP server or no default contact"
        else:
            message = notices.budget_spent(config.sender, to, held[0], budget, in_scope)
            try:
                notices.send(config, message)
            except notices.MailFailed as e:
                outcome, reason = "not_sent", str(e)
        self.store.add_audit(
            "vm.budget.spent",
            None,
            outcome,
            now,
            budget=budget,
            in_scope=in_scope,
            held=held,
            to=to,
            reason=reason,
        )


def _state_of(notice: Notice) -> rules.DecisionState:
    """A standalone notice's facts as the decision state the shared rules judge."""
    if notice.acted_at is not None:
        return rules.DecisionState.COMMANDED
    if notice.answer == "skip":
        return rules.DecisionState.SKIPPED
    if notice.answer == "delay":
        return rules.DecisionState.DELAYED
    return rules.DecisionState.NOTIFIED


def new_link_key() -> bytes:
    return secrets.token_bytes(32)
