"""Mail as the rules see it: a message and a function that sends it.

How it is sent (SMTP, from the settings) is `cloud/mail.py`'s business; a rule that mails
takes a `Mailer`, or None when the cloud has no mail server, and records why it could not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    body: str


Mailer = Callable[[Mail], None]


class MailUnavailable(Exception):
    """Raised by a mailer that cannot deliver; the caller records why."""
