"""Who is asking, decided once at the edge: a bearer API token (scripts, MSP automation) or
the portal's session cookie, both resolving to one `Principal`.

A request with an Authorization header is judged by it alone: a bad token is a 401 even
beside a good cookie. A cookie request whose session is forged, ended or expired is a 401;
an unsafe one (a POST) must also echo the CSRF token in `X-CSRF-Token`, or it is a 403
before anything runs. Bearer requests need no CSRF token: no browser attaches them by itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from starlette.requests import HTTPConnection

from dockyard.cloud.auth import sessions
from dockyard.cloud.domain import admin
from dockyard.cloud.domain.principal import Principal
from dockyard.cloud.services import Services
from dockyard.cloud.settings import Settings

UNAUTHENTICATED = (
    "unauthenticated: send Authorization: Bearer <API token>, or sign in at /auth/login"
)
SESSION_ENDED = "your session has ended or is not valid: sign in again at /auth/login"
CSRF_MISSING = (
    "refused: a signed-in browser's POST must carry the dockyard_csrf cookie's value in the"
    " X-CSRF-Token header (nothing was changed)"
)


@dataclass(frozen=True)
class Caller:
    principal: Principal
    session: sessions.Active | None = None
    """The portal session, for a cookie request; None for a bearer token."""


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str
    reason: str
    """For the log: why, without the secret."""
    headers: dict[str, str] = field(default_factory=dict)


def lifetimes(settings: Settings) -> sessions.Lifetimes:
    return sessions.Lifetimes(
        timedelta(seconds=settings.session_idle_s), timedelta(seconds=settings.session_absolute_s)
    )


def bearer_principal(svc: Services, authorization: str) -> Principal | None:
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return None
    with svc.db.reader() as session:
        return admin.principal_for_api_token(session, svc.clock, secret.strip())


def session_for(svc: Services, secret: str) -> sessions.Active | None:
    with svc.db.transaction() as session:
        return sessions.resolve(session, svc.clock, secret, lifetimes(svc.settings))


async def authenticate(svc: Services, request: HTTPConnection, *, unsafe: bool) -> Caller | Refusal:
    """A request's principal, or why not; also a WebSocket's, at its upgrade and again
    before each thing a subscription sends (`api/graphql/live_context.py`)."""
    header = request.headers.get("authorization", "")
    if header:
        principal = await svc.run_db(bearer_principal, svc, header)
        if principal is None:
            return Refusal(
                401,
                UNAUTHENTICATED,
                "an unknown, revoked or expired token",
                {"WWW-Authenticate": "Bearer"},
            )
        return Caller(principal)
    cookie = request.cookies.get(sessions.COOKIE, "")
    if not cookie:
        return Refusal(401, UNAUTHENTICATED, "no token", {"WWW-Authenticate": "Bearer"})
    active = await svc.run_db(session_for, svc, cookie)
    if active is None:
        return Refusal(401, SESSION_ENDED, "an unknown, ended or expired session")
    if unsafe and not active.csrf_matches(
        request.headers.get(sessions.CSRF_HEADER, ""), request.cookies.get(sessions.CSRF_COOKIE, "")
    ):
        return Refusal(403, CSRF_MISSING, "a cookie POST without its CSRF token")
    return Caller(active.principal, active)
