"""Local passwords, for the embedded default only (a developer's or a small site's cloud on
SQLite, with no identity provider): a production cloud signs users in through OpenID.

Hashes are scrypt (the standard library's, no new dependency) with a random salt, stored as
`scrypt$N$r$p$salt$hash` so the cost can be raised later without breaking old hashes.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.cloud.domain.errors import Conflict, Invalid, NotFound
from dockyard.cloud.store.models import User

N, R, P = 2**15, 8, 1
MAX_MEM = 64 * 1024 * 1024
MIN_LENGTH = 12


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, maxmem=MAX_MEM)
    return f"scrypt${N}${R}${P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        got = hashlib.scrypt(
            password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), maxmem=MAX_MEM
        )
    except ValueError:
        return False
    return hmac.compare_digest(got, expected)


@functools.cache
def _dummy() -> str:
    """Checked against when the e-mail is unknown, so a wrong address costs as long as a
    wrong password and the answer's timing does not tell which users exist."""
    return hash_password(secrets.token_urlsafe(16))


def check_login(session: Session, email: str, password: str) -> uuid.UUID | None:
    """The user whose e-mail and password these are, or None."""
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None or user.password_hash is None:
        verify_password(password, _dummy())
        return None
    return user.id if verify_password(password, user.password_hash) else None


def check_strength(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise Invalid(f"a password has at least {MIN_LENGTH} characters")


def set_first_password(session: Session, email: str, password: str) -> uuid.UUID:
    """Give a user its first password; one it already has is changed only by the user."""
    check_strength(password)
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise NotFound("user")
    if user.password_hash is not None:
        raise Conflict(f"{user.email} already has a password")
    user.password_hash = hash_password(password)
    return user.id
