"""Notices to a VM's owner before it is shut down, sent through the site's SMTP server.

Standalone (and in `config` flow mode, where the cloud knows no VM names) the agent sends
them itself; docked with metadata the cloud does. The mail names the VM, why it is judged
idle, when it will be shut down, and carries two signed single-use links: skip (leave it
running and start the period again) and delay (ask again a week later).
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any


class MailFailed(Exception):
    pass


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int = 25
    sender: str = "dockyard@localhost"
    starttls: bool = False
    user: str | None = None
    password: str | None = None
    timeout_s: float = 30.0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SmtpConfig:
        if not d.get("host"):
            raise ValueError("smtp: host is required")
        return cls(
            host=str(d["host"]),
            port=int(d.get("port", 25)),
            sender=str(d.get("sender", "dockyard@localhost")),
            starttls=bool(d.get("starttls", False)),
            user=d.get("user"),
            password=d.get("password"),
            timeout_s=float(d.get("timeout_s", 30)),
        )


def _message(sender: str, recipient: str, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="dockyard")
    return msg


def compose(sender: str, recipient: str, text: tuple[str, str]) -> EmailMessage:
    """A mail of a subject and body (a notice's from `rules.notice_text`)."""
    subject, body = text
    msg = _message(sender, recipient, subject)
    msg.set_content(body)
    return msg


def budget_spent(
    sender: str, recipient: str, vm_name: str, budget: int, in_scope: int
) -> EmailMessage:
    """To the policy's contact, once per window: idle VMs wait because the budget is spent."""
    msg = _message(
        sender, recipient, f"Dockyard: the shutdown budget ({budget} of {in_scope} VMs) is spent"
    )
    msg.set_content(
        f"Hello,\n\nDockyard has acted on {budget} VM(s) in this window, the budget its\n"
        f"policy allows for {in_scope} VMs in scope. {vm_name} and any others due now wait.\n\n"
        "To let more go ahead in this window, approve them on the agent:\n"
        "  dockyard-agent vm approve N\n"
        "or with the approveVmActions mutation when the agent is docked. Otherwise they\n"
        "go ahead as the next window's budget allows.\n"
    )
    return msg


def send(config: SmtpConfig, message: EmailMessage) -> None:
    try:
        with smtplib.SMTP(config.host, config.port, timeout=config.timeout_s) as smtp:
            if config.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if config.user:
                smtp.login(config.user, config.password or "")
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as e:
        raise MailFailed(f"cannot send mail through {config.host}:{config.port}: {e}") from e
