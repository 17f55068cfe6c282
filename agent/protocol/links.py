"""Signed answer links ("skip", "delay") in shutdown notices: the format both sides use.

A link carries its notice, its decision, its VM, its answer, its expiry and a random nonce,
MAC'd with HMAC-SHA256 under a key only its signer holds (the agent's standalone key, or the
cloud's). Whoever checks it also refuses a nonce seen before, so a link works once; the
binding to one VM and one decision means a link cannot answer for another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

ANSWERS = ("skip", "delay")


class BadLink(Exception):
    """Forged, altered, expired or malformed: the message says which, never the key."""


@dataclass(frozen=True)
class LinkClaims:
    notice_id: str
    decision_id: str
    vm: str
    """`endpoint/native-id` (agent side) or the cloud's VM key."""
    answer: str
    expires_at: datetime
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(
    key: bytes,
    notice_id: str,
    decision_id: str,
    vm: str,
    answer: str,
    now: datetime,
    lifetime: timedelta,
) -> str:
    if answer not in ANSWERS:
        raise ValueError(f"answer is one of {ANSWERS}")
    body = {
        "n": notice_id,
        "d": decision_id,
        "v": vm,
        "a": answer,
        "e": int((now + lifetime).timestamp()),
        "r": secrets.token_urlsafe(12),
    }
    payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    mac = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{mac}"


def verify(key: bytes, token: str, now: datetime) -> LinkClaims:
    payload, sep, mac = token.partition(".")
    if not sep or not payload or not mac:
        raise BadLink("this link is malformed")
    expected = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, mac):
        raise BadLink("this link was not issued by us or has been altered")
    try:
        body = json.loads(_unb64(payload))
        claims = LinkClaims(
            notice_id=str(body["n"]),
            decision_id=str(body["d"]),
            vm=str(body["v"]),
            answer=str(body["a"]),
            expires_at=datetime.fromtimestamp(int(body["e"]), UTC),
            nonce=str(body["r"]),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise BadLink("this link is malformed") from e
    if claims.answer not in ANSWERS:
        raise BadLink("this link is malformed")
    if now >= claims.expires_at:
        raise BadLink("this link has expired")
    return claims
