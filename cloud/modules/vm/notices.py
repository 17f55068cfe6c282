"""Docked agents propose; the cloud gives the notice and, after it, issues the shutdown.

A proposal (`vm.decision` from an agent in `metadata` or `data` flow mode) is mailed to the
VM's owner with signed single-use skip and delay links; when the notice period passes
unanswered, a `vm.power` command goes to the agent that proposed it (whose own safety net
still applies). A skip sends `vm.resolve` so the agent starts the idle period again; a delay
moves the deadline a week. Every timer reads the cloud's clock.

The loop closes on the agent's answer: once the command is final, the decision is `done`
(the VM went off), `held` (the agent's budget is spent: `approve` lets it go again at once,
and it is tried again by itself when the policy's budget window has passed) or
`failed`, with the agent's code and sentence. A refused link is written to the tenant's
audit log when the link can be tied to a tenant at all.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dockyard.agent.protocol import links
from dockyard.agent.protocol import notices as rules
from dockyard.agent.protocol.notices import DecisionState as S
from dockyard.agent.protocol.vm import POLICY_KIND, VmLifecyclePolicy
from dockyard.cloud.domain import agents, audit, commands
from dockyard.cloud.domain.clock import Clock
from dockyard.cloud.domain.context import Ctx
from dockyard.cloud.domain.errors import Invalid
from dockyard.cloud.domain.mail import Mail, Mailer, MailUnavailable
from dockyard.cloud.domain.permissions import Permission as P
from dockyard.cloud.store.models import (
    AgentEntry,
    AuditRecord,
    Command,
    JobEvent,
    UsedNoticeLink,
    VmDecision,
)
from dockyard.cloud.store.tenancy import unscoped

DEFAULT_WINDOW_H = float(VmLifecyclePolicy.model_fields["budget_window_hours"].default)
TELL_HELD_EVERY = timedelta(days=1)
"""The policy's contact hears at most this often, per agent, that shutdowns are held."""
ANSWER_PATH = rules.ANSWER_PATH


def link_key(secret: bytes) -> bytes:
    """A key of its own for notice links, derived from the cloud's secret."""
    return hmac.new(secret, b"dockyard vm notice links v1", hashlib.sha256).digest()


def open_work(session: Session, clock: Clock) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(tenant, decision) pairs with something to do now, across tenants."""
    now = clock.now()
    with unscoped(session, "the notice loop finds every tenant's due VM decisions"):
        rows = session.execute(
            select(VmDecision.tenant_id, VmDecision.id).where(
                (VmDecision.status == S.PROPOSED)
                | (VmDecision.status.in_((*rules.OPEN, S.HELD)) & (VmDecision.due_at <= now))
                | (
                    (VmDecision.status == S.COMMANDED)
                    & VmDecision.command_id.in_(
                        select(Command.id).where(Command.state.in_(commands.FINAL_STATES))
                    )
                )
            )
        ).all()
    return [(r[0], r[1]) for r in rows]


def advance(
    ctx: Ctx, decision_id: uuid.UUID, mailer: Mailer | None, key: bytes, base_url: str
) -> str:
    """One step for one decision: give its notice, or issue its command. Returns its status."""
    decision = ctx.session.get(VmDecision, decision_id)
    if decision is None:
        return "gone"
    now = ctx.now()
    if decision.status == S.PROPOSED:
        if not decision.owner:
            decision.status, decision.error = S.FAILED, "no owner and no default contact"
            return decision.status
        if mailer is None:
            decision.status = S.FAILED
            decision.error = "the cloud has no SMTP server configured (DOCKYARD_SMTP_HOST)"
            return decision.status
        due = now + timedelta(hours=decision.notice_hours)
        lifetime = rules.link_lifetime(decision.notice_hours)
        urls = {
            answer: f"{base_url}{ANSWER_PATH}?t="
            + links.sign(
                key,
                str(decision.id),
                decision.decision_id,
                _vm_key(decision),
                answer,
                now,
                lifetime,
            )
            for answer in links.ANSWERS
        }
        subject, body = rules.notice_text(
            decision.vm_name or decision.native_id,
            decision.endpoint,
            decision.action or "shutdown",
            due,
            list(decision.reasons),
            urls["skip"],
            urls["delay"],
        )
        try:
            mailer(Mail(to=decision.owner, subject=subject, body=body))
        except MailUnavailable as e:
            decision.status, decision.error = S.FAILED, str(e)
            return decision.status
        decision.status, decision.notice_sent_at, decision.due_at = S.NOTIFIED, now, due
        audit.record(
            ctx, decision.tenant_id, "vm.notice", target=str(decision.id), to=decision.owner
        )
        return decision.status
    if decision.status == S.HELD and decision.due_at and decision.due_at <= now:
        decision.status = S.NOTIFIED  # the window passed: its command is issued again below
        audit.record(ctx, decision.tenant_id, "vm.decision.retried", target=str(decision.id))
    if decision.status in rules.OPEN and decision.due_at and decision.due_at <= now:
        # A decision let go again after an approval gets a command of its own.
        again = f":after:{decision.command_id}" if decision.command_id else ""
        command = commands.issue(
            ctx,
            decision.agent_id,
            "vm.power",
            {
                "endpoint": decision.endpoint,
                "native_id": decision.native_id,
                "action": decision.action or "shutdown",
                "decision_id": decision.decision_id,
                # The time the mail stated, computed once when it was sent: the agent
                # acts on nothing before it, whatever its own clock says.
                "not_before": _stated_time(ctx, decision).isoformat(),
            },
            idempotency_key=f"vm-decision:{decision.id}{again}",
        )
        decision.status, decision.command_id = S.COMMANDED, command.id
    elif decision.status == S.COMMANDED and decision.command_id is not None:
        _settle(ctx, decision)
        if decision.status == S.HELD:
            _tell_held(ctx, decision, mailer)
    return decision.status


def _stated_time(ctx: Ctx, decision: VmDecision) -> datetime:
    """The time the notice stated. A decision let go again (its window passed, or an
    approval) keeps its first command's: `due_at` then says when the cloud sends again, and
    the agent's estimate of the cloud's clock may trail that by a poll's latency."""
    assert decision.due_at is not None  # commanded only once due
    if decision.command_id is not None:
        earlier = ctx.session.get(Command, decision.command_id)
        stated = earlier.args.get("not_before") if earlier is not None else None
        if isinstance(stated, str):
            return datetime.fromisoformat(stated)
    return decision.due_at


def held_policy(ctx: Ctx, agent_id: uuid.UUID) -> dict[str, Any]:
    """The document of the vm-lifecycle policy the agent was last sent (the one it holds),
    or {} when none is assigned."""
    payloads = ctx.session.scalars(
        select(AgentEntry.payload)
        .where(AgentEntry.agent_id == agent_id, AgentEntry.kind == "policy")
        .order_by(AgentEntry.seq.desc())
        .limit(100)
    )
    for payload in payloads:
        if payload.get("policy_kind") != POLICY_KIND:
            continue
        return dict(payload.get("document") or {}) if payload.get("assigned") else {}
    return {}


def policy_contact(ctx: Ctx, agent_id: uuid.UUID) -> str | None:
    """The `default_contact` of the policy the agent holds, or None."""
    contact = held_policy(ctx, agent_id).get("default_contact")
    return str(contact) if contact else None


def budget_window(ctx: Ctx, agent_id: uuid.UUID) -> timedelta:
    """The budget window of the policy the agent holds (the agent's local window may be
    longer: a retry inside it is held again, one command a window)."""
    try:
        hours = float(held_policy(ctx, agent_id).get("budget_window_hours") or DEFAULT_WINDOW_H)
    except (TypeError, ValueError):
        hours = DEFAULT_WINDOW_H
    return timedelta(hours=max(1.0, hours))


def _tell_held(ctx: Ctx, decision: VmDecision, mailer: Mailer | None) -> None:
    """Docked, the cloud tells the policy's contact once a day per agent that shutdowns
    wait for an approval (the agent, which keeps the budget, usually has no mail server)."""
    now = ctx.now()
    target = str(decision.agent_id)
    told = ctx.session.scalar(
        select(AuditRecord.id)
        .where(
            AuditRecord.tenant_id == decision.tenant_id,
            AuditRecord.action == "vm.budget.told",
            AuditRecord.target == target,
            AuditRecord.at > now - TELL_HELD_EVERY,
        )
        .limit(1)
    )
    if told is not None:
        return
    to = policy_contact(ctx, decision.agent_id)
    outcome, reason = "ok", ""
    if to is None or mailer is None:
        outcome = "not_sent"
        reason = "no default_contact in the policy" if to is None else "no SMTP server"
    else:
        try:
            mailer(
                Mail(
                    to=to,
                    subject="Dockyard: idle VMs wait for an approval (the budget is spent)",
                    body=(
                        "Hello,\n\nAn agent has acted on as many idle VMs as its budget allows"
                        " in this window; the others wait. Held now includes "
                        f"{decision.vm_name or decision.native_id} ({decision.endpoint}).\n\n"
                        "Let more go ahead with the approveVmActions mutation, or they go"
                        " ahead as the next window's budget allows.\n"
                    ),
                )
            )
        except MailUnavailable as e:
            outcome, reason = "not_sent", str(e)
    audit.record(
        ctx,
        decision.tenant_id,
        "vm.budget.told",
        target=target,
        outcome=outcome,
        to=to,
        reason=reason,
    )


def _settle(ctx: Ctx, decision: VmDecision) -> None:
    """The command is final: the decision takes the agent's result."""
    command = ctx.session.get(Command, decision.command_id)
    if command is None or command.state not in commands.FINAL_STATES:
        return
    detail = ctx.session.scalar(
        select(JobEvent.detail)
        .where(JobEvent.job_id == command.job_id, JobEvent.kind.in_(("succeeded", "failed")))
        .order_by(JobEvent.received_at.desc())
        .limit(1)
    )
    code = command.result_code or command.state
    if command.state == "succeeded":
        decision.status, decision.error = S.DONE, None
    elif code == "over_budget":
        # Held: tried again when the budget's window has passed (as a standalone agent's
        # held VMs go ahead as the next window's budget allows), or sooner on an approval.
        decision.status = S.HELD
        decision.due_at = ctx.now() + budget_window(ctx, decision.agent_id)
        decision.error = f"over_budget: {detail or 'the budget of the agent is spent'}"
    else:
        decision.status = S.FAILED
        decision.error = f"{code}: {detail}" if detail else code
    audit.record(
        ctx,
        decision.tenant_id,
        f"vm.decision.{decision.status}",
        target=str(decision.id),
        outcome="ok" if decision.status == S.DONE else decision.status,
        code=code,
        command=str(command.id),
    )


def approve(ctx: Ctx, agent_id: uuid.UUID, count: int) -> tuple[uuid.UUID, int]:
    """`count` more actions past the agent's budget: a `vm.approve` to the agent, and up to
    `count` of its held decisions are let go again (their `vm.power` follows the approval,
    in the agent's sequence). Returns the approval's command id and how many were let go."""
    if not 1 <= count <= 1000:
        raise Invalid("count is between 1 and 1000")
    agent = agents.get(ctx, agent_id)
    ctx.principal.require(agent.tenant_id, P.VM_POWER, "agent")
    command = commands.issue(
        ctx, agent.id, "vm.approve", {"count": count, "by": str(ctx.principal.id or "")}
    )
    held = ctx.session.scalars(
        select(VmDecision)
        .where(VmDecision.agent_id == agent.id, VmDecision.status == S.HELD)
        .order_by(VmDecision.due_at)
        .limit(count)
    ).all()
    for decision in held:
        decision.status, decision.error = S.NOTIFIED, None
        decision.due_at = ctx.now()  # no longer the window's end: it goes with the approval
    audit.record(
        ctx, agent.tenant_id, "vm.approve", target=str(agent.id), count=count, released=len(held)
    )
    return command.id, len(held)


def refused_link(ctx: Ctx, tenant_id: uuid.UUID, claims: links.LinkClaims, why: str) -> None:
    """A link tied to this tenant's notice was refused (replayed, misbound, too late)."""
    audit.record(
        ctx,
        tenant_id,
        "vm.notice.link",
        target=claims.notice_id,
        outcome="refused",
        reason=why,
        answer=claims.answer,
    )


def _vm_key(decision: VmDecision) -> str:
    return f"{decision.agent_id}/{decision.endpoint}/{decision.native_id}"


def find_for_link(
    session: Session, key: bytes, token: str, clock: Clock
) -> tuple[uuid.UUID, links.LinkClaims]:
    """Checks the signature and finds the decision's tenant (the link is all we have)."""
    claims = links.verify(key, token, clock.now())
    try:
        decision_id = uuid.UUID(claims.notice_id)
    except ValueError:
        raise links.BadLink("this link is malformed") from None
    with unscoped(session, "a notice link is answered by its signature, before any login"):
        tenant = session.scalar(select(VmDecision.tenant_id).where(VmDecision.id == decision_id))
    if tenant is None:
        raise links.BadLink("this link does not belong to a notice of ours")
    return tenant, claims


def answer(ctx: Ctx, claims: links.LinkClaims) -> str:
    decision = ctx.session.get(VmDecision, uuid.UUID(claims.notice_id))
    if (
        decision is None
        or decision.decision_id != claims.decision_id
        or _vm_key(decision) != claims.vm
    ):
        raise links.BadLink("this link does not belong to a notice of ours")
    rules.check_answerable(rules.DecisionState(decision.status))
    try:
        with ctx.session.begin_nested():
            ctx.session.add(
                UsedNoticeLink(tenant_id=decision.tenant_id, nonce=claims.nonce, used_at=ctx.now())
            )
    except IntegrityError:
        raise links.BadLink("this link has already been used") from None
    now = ctx.now()
    name = decision.vm_name or decision.native_id
    decision.answer, decision.answered_at = claims.answer, now
    audit.record(ctx, decision.tenant_id, f"vm.notice.{claims.answer}", target=str(decision.id))
    if claims.answer == "skip":
        decision.status = S.SKIPPED
        commands.issue(
            ctx,
            decision.agent_id,
            "vm.resolve",
            {"decision_id": decision.decision_id, "outcome": "skipped"},
            idempotency_key=f"vm-skip:{decision.id}",
        )
        return rules.skipped_reply(name)
    decision.status = S.DELAYED
    decision.due_at = rules.delayed_until(decision.due_at, now)
    return rules.delayed_reply(name, decision.due_at)
