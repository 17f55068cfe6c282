"""Sending the cloud's mail (VM notices) through the configured SMTP server."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from dockyard.cloud.domain.mail import Mail, Mailer, MailUnavailable
from dockyard.cloud.settings import Settings


def mailer(settings: Settings) -> Mailer | None:
    if not settings.smtp_host:
        return None

    def send(mail: Mail) -> None:
        message = EmailMessage()
        message["From"] = settings.smtp_sender
        message["To"] = mail.to
        message["Subject"] = mail.subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain="dockyard")
        message.set_content(mail.body)
        try:
            with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=30) as smtp:
                if settings.smtp_starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if settings.smtp_user:
                    password = settings.smtp_password
                    smtp.login(settings.smtp_user, password.get_secret_value() if password else "")
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as e:
            raise MailUnavailable(
                f"cannot send mail through {settings.smtp_host}:{settings.smtp_port}: {e}"
            ) from e

    return send
