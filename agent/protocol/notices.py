"""The rules of a shutdown notice, one set for both sides: the agent's module follows them
standalone (`agent/modules/vm/lifecycle.py`), the cloud when docked (`cloud/modules/vm/
notices.py`). An owner who gets a notice from either must see the same delay, the
same link lifetime, the same answers allowed and refused, and the same replies; written
twice, the two had already drifted apart in their wording.

The link itself (its signature and claims) is in `links.py`; the states here are those a
docked decision moves through (the agent keeps the same facts as columns of its notice).
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta

from .links import BadLink

DELAY = timedelta(days=7)
"""How far a "delay" answer moves the shutdown: past the later of its due time and now."""
LINK_MIN = timedelta(hours=1)
ANSWER_PATH = "/vm/notices/answer"
"""Where a link is answered, under the agent's or the cloud's public URL."""


class DecisionState(enum.StrEnum):
    """A shutdown decision's states: proposed, then notified (the owner told), perhaps
    delayed or skipped by the owner's answer, then commanded (the power command issued),
    held (the run's budget was spent) or done; failed with its reason at any step."""

    PROPOSED = "proposed"
    NOTIFIED = "notified"
    DELAYED = "delayed"
    SKIPPED = "skipped"
    COMMANDED = "commanded"
    HELD = "held"
    DONE = "done"
    FAILED = "failed"


OPEN = frozenset({DecisionState.NOTIFIED, DecisionState.DELAYED})
"""The states in which the owner's answer still counts."""
ORDERED = frozenset({DecisionState.COMMANDED, DecisionState.HELD, DecisionState.DONE})


def link_lifetime(notice_hours: float) -> timedelta:
    """A link outlives the notice period by one delay, so a "delay" followed late in the
    period still works; never less than an hour plus the delay."""
    return max(timedelta(hours=notice_hours), LINK_MIN) + DELAY


def delayed_until(due: datetime | None, now: datetime) -> datetime:
    return max(due or now, now) + DELAY


def check_answerable(state: DecisionState) -> None:
    """BadLink with the sentence the person who followed the link reads, unless an answer
    may still change the decision."""
    if state in ORDERED:
        raise BadLink("too late: the shutdown has been ordered")
    if state is DecisionState.SKIPPED:
        raise BadLink("this notice was already answered with skip")
    if state not in OPEN:
        raise BadLink("this notice is not open")


def skipped_reply(vm_name: str) -> str:
    return f"{vm_name} stays on; its idle period starts again today."


def delayed_reply(vm_name: str, until: datetime) -> str:
    return f"{vm_name} will not be shut down before {until:%Y-%m-%d %H:%M} UTC."


def notice_text(
    vm_name: str,
    where: str,
    action: str,
    due_at: datetime,
    reasons: list[str],
    skip_url: str,
    delay_url: str,
) -> tuple[str, str]:
    """The notice's subject and body, as the owner reads it from the agent or the cloud."""
    subject = f"VM {vm_name} will be shut down on {due_at:%Y-%m-%d %H:%M} UTC"
    why = "\n".join(f"  - {r}" for r in reasons)
    body = (
        f"Hello,\n\n"
        f"The virtual machine {vm_name} ({where}) has been idle for the whole period its\n"
        f"policy sets:\n{why}\n\n"
        f"Unless you answer, Dockyard will {action.replace('_', ' ')} {vm_name} on "
        f"{due_at:%Y-%m-%d at %H:%M} UTC.\n\n"
        f"Keep it running (and start the idle period again):\n  {skip_url}\n\n"
        f"Ask again in a week:\n  {delay_url}\n\n"
        f"Each link works once and only for this VM and this notice.\n"
    )
    return subject, body
