"""Portal sessions, kept server-side: the browser holds a random `dockyard_session` cookie
and the database only its SHA-256, so a stolen database yields no usable cookie and sign-out
(or an operator) ends a session for good.

A session dies `idle` after its last request and `absolute` after its sign-in, both read
against the injected clock. Each carries a CSRF token, also sent as the readable cookie
`dockyard_csrf`: a cookie-authenticated POST must echo it in `X-CSRF-Token`, which a page
of another origin can neither read nor set (the double-submit pattern, checked against the
server's copy too). A new session is issued at every sign-in and the one the browser held
before is ended, so a cookie planted before sign-in is worth nothing after it.
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from dockyard.cloud.domain.clock import Clock
from dockyard.cloud.domain.principal import Principal
from dockyard.cloud.domain.secrets import hash_secret
from dockyard.cloud.domain.tenants import principal_for_user
from dockyard.cloud.store.models import UserSession

COOKIE = "dockyard_session"
CSRF_COOKIE = "dockyard_csrf"
CSRF_HEADER = "x-csrf-token"
# last_seen_at is written at most this often per session, not on every request.
TOUCH_EVERY = timedelta(seconds=30)


@dataclass(frozen=True)
class Lifetimes:
    idle: timedelta
    absolute: timedelta


@dataclass(frozen=True)
class Issued:
    """What a sign-in hands the browser: the session cookie's value and the CSRF token."""

    secret: str
    csrf: str


@dataclass(frozen=True)
class Active:
    session_id: uuid.UUID
    user_id: uuid.UUID
    csrf: str
    principal: Principal

    def csrf_matches(self, header: str, cookie: str) -> bool:
        """The header must equal both the readable cookie and the server's copy."""
        return bool(header) and all(
            hmac.compare_digest(header.encode(), other.encode()) for other in (cookie, self.csrf)
        )


def start(
    session: Session,
    clock: Clock,
    user_id: uuid.UUID,
    lifetimes: Lifetimes,
    replacing: str | None = None,
) -> Issued:
    """A new session for the user; the browser's previous one, if any, ends here."""
    if replacing:
        end(session, clock, replacing)
    now = clock.now()
    _purge(session, user_id, now - lifetimes.absolute)
    secret = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    session.add(
        UserSession(
            user_id=user_id,
            token_hash=hash_secret(secret),
            csrf_token=csrf,
            created_at=now,
            last_seen_at=now,
        )
    )
    session.flush()
    return Issued(secret, csrf)


def resolve(session: Session, clock: Clock, secret: str, lifetimes: Lifetimes) -> Active | None:
    """The live session behind a cookie, with its user's principal; None for a forged,
    ended, idle or too old one (an expired one is ended on the way)."""
    row = session.scalar(
        select(UserSession).where(
            UserSession.token_hash == hash_secret(secret), UserSession.ended_at.is_(None)
        )
    )
    if row is None:
        return None
    now = clock.now()
    if now - row.last_seen_at >= lifetimes.idle or now - row.created_at >= lifetimes.absolute:
        row.ended_at = now
        return None
    if now - row.last_seen_at >= TOUCH_EVERY:
        row.last_seen_at = now
    return Active(row.id, row.user_id, row.csrf_token, principal_for_user(session, row.user_id))


def _purge(session: Session, user_id: uuid.UUID, born_before: datetime) -> None:
    """The user's sessions past their absolute lifetime are deleted at its next sign-in,
    ended or not, so the table holds at most the sessions still alive and those ended
    within one lifetime."""
    session.execute(
        delete(UserSession).where(
            UserSession.user_id == user_id, UserSession.created_at < born_before
        )
    )


def end(session: Session, clock: Clock, secret: str) -> bool:
    """End the session behind a cookie; False when there was none alive."""
    result = session.execute(
        update(UserSession)
        .where(UserSession.token_hash == hash_secret(secret), UserSession.ended_at.is_(None))
        .values(ended_at=clock.now())
    )
    return bool(getattr(result, "rowcount", 0))
