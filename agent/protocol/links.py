"""Signed answer links ("skip", "delay") in shutdown notices: the format both sides use.

A link is a JWT (RFC 7519: a JWS, RFC 7515, in compact form) signed with HS256 under a key
only its signer holds (the agent's standalone key, or the cloud's), made and checked by
joserfc, the JOSE library the agent already uses for its token assertions, rather than a
token format of our own. Its claims name its notice, its decision, its VM and its answer,
with the registered `exp` (expiry) and `jti` (a random nonce). Whoever checks it also
refuses a `jti` seen before, so a link works once; the binding to one VM and one decision
means a link cannot answer for another. The expiry is judged by the checker's clock (the
injectable one), not joserfc's wall clock, so the notice's timeline is the only one.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError, UnsupportedAlgorithmError
from joserfc.jwk import OctKey

ANSWERS = ("skip", "delay")
ALGORITHM = "HS256"


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
    claims = {
        "notice": notice_id,
        "decision": decision_id,
        "vm": vm,
        "answer": answer,
        "exp": int((now + lifetime).timestamp()),
        "jti": secrets.token_urlsafe(12),
    }
    # No `typ` header: the link is short, and only our own checker reads it.
    return jwt.encode({"alg": ALGORITHM}, claims, OctKey.import_key(key), default_type=None)


def verify(key: bytes, token: str, now: datetime) -> LinkClaims:
    try:
        body = jwt.decode(token, OctKey.import_key(key), algorithms=[ALGORITHM]).claims
    except (BadSignatureError, UnsupportedAlgorithmError) as e:
        raise BadLink("this link was not issued by us or has been altered") from e
    except (JoseError, ValueError, TypeError) as e:
        raise BadLink("this link is malformed") from e
    try:
        claims = LinkClaims(
            notice_id=str(body["notice"]),
            decision_id=str(body["decision"]),
            vm=str(body["vm"]),
            answer=str(body["answer"]),
            expires_at=datetime.fromtimestamp(int(body["exp"]), UTC),
            nonce=str(body["jti"]),
        )
    except (ValueError, KeyError, TypeError, OverflowError) as e:
        raise BadLink("this link is malformed") from e
    if claims.answer not in ANSWERS:
        raise BadLink("this link is malformed")
    if now >= claims.expires_at:
        raise BadLink("this link has expired")
    return claims
