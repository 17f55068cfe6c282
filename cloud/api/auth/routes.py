"""The portal's sign-in routes, under /auth.

`GET /auth/login?return_to=/path` sends the browser to the identity provider (return_to must
be a path on this site: anything that could lead elsewhere is refused, so the cloud is no
open redirect); `GET /auth/callback` finishes the login and sets the session cookies;
`POST /auth/logout` ends the session server-side; `POST /auth/password` signs in with a
local password, on the embedded default only; `GET /auth/me` says who is signed in and
where; `GET /auth/config` says which ways of signing in this cloud offers.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from dockyard.cloud.api import request_ids
from dockyard.cloud.auth import passwords, sessions
from dockyard.cloud.auth.oidc import (
    LOGIN_COOKIE,
    LOGIN_TTL,
    Identity,
    LoginSealer,
    OidcClient,
    SignInRefused,
    bind_user,
)
from dockyard.cloud.auth.profile import profile
from dockyard.cloud.auth.throttle import FailedSignIns
from dockyard.cloud.domain.principal import Principal
from dockyard.cloud.services import Services

from . import pages
from .edge import Refusal, authenticate, lifetimes

log = logging.getLogger(__name__)

MAX_RETURN_TO = 2000
MAX_PASSWORD_BODY = 4096
BAD_RETURN_TO = "return_to must be a path on this site beginning with a single / (as /agents)"


def safe_return_to(value: str | None) -> str:
    """A same-origin path to go back to after sign-in; refused if it could leave the site
    (`//host`, `/\\host`, a scheme, control characters)."""
    if not value:
        return "/"
    if (
        len(value) > MAX_RETURN_TO
        or not value.startswith("/")
        or value.startswith("//")
        or "\\" in value
        or any(ord(c) < 0x21 or ord(c) == 0x7F for c in value)
    ):
        raise SignInRefused(BAD_RETURN_TO)
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        raise SignInRefused(BAD_RETURN_TO)
    return value


class AuthRoutes:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        settings = svc.settings
        self.secure = settings.secure_cookies
        self.sealer = LoginSealer(settings.signing_secret(), svc.clock)
        self.lifetimes = lifetimes(settings)
        self.failures = FailedSignIns()
        self.oidc: OidcClient | None = None
        if settings.oidc_enabled:
            self.oidc = OidcClient(
                settings.oidc_issuer,
                settings.oidc_client_id,
                settings.oidc_client_secret(),
                f"{settings.public_url}/auth/callback",
                svc.clock,
            )

    def routes(self) -> list[BaseRoute]:
        return [
            Mount(
                "/auth",
                routes=[
                    Route("/login", self.login, methods=["GET"]),
                    Route("/callback", self.callback, methods=["GET"]),
                    Route("/logout", self.logout, methods=["POST"]),
                    Route("/password", self.password, methods=["POST"]),
                    Route("/me", self.me, methods=["GET"]),
                    Route("/config", self.config, methods=["GET"]),
                ],
            )
        ]

    # -- cookies

    def _set_session(self, response: Response, issued: sessions.Issued) -> Response:
        """The session cookie (HttpOnly) and its CSRF token (readable by the portal's script,
        which echoes it in X-CSRF-Token)."""
        for name, value, httponly in (
            (sessions.COOKIE, issued.secret, True),
            (sessions.CSRF_COOKIE, issued.csrf, False),
        ):
            response.set_cookie(
                name,
                value,
                max_age=self.svc.settings.session_absolute_s,
                path="/",
                httponly=httponly,
                secure=self.secure,
                samesite="lax",
            )
        return response

    def _clear_session(self, response: Response) -> Response:
        for name, httponly in ((sessions.COOKIE, True), (sessions.CSRF_COOKIE, False)):
            response.delete_cookie(
                name, path="/", httponly=httponly, secure=self.secure, samesite="lax"
            )
        return response

    def _start(self, user_id: uuid.UUID, replacing: str | None) -> sessions.Issued:
        with self.svc.db.transaction() as session:
            issued = sessions.start(session, self.svc.clock, user_id, self.lifetimes, replacing)
        log.info("signed in with a password", extra={"user_id": str(user_id)})
        return issued

    def _bind_and_start(self, identity: Identity, replacing: str | None) -> sessions.Issued:
        with self.svc.db.transaction() as session:
            user_id = bind_user(session, identity)
            issued = sessions.start(session, self.svc.clock, user_id, self.lifetimes, replacing)
        log.info("signed in through the identity provider", extra={"user_id": str(user_id)})
        return issued

    # -- routes

    async def login(self, request: Request) -> Response:
        if self.oidc is None:
            return pages.page(
                "No identity provider",
                "This Dockyard has no identity provider configured"
                " (DOCKYARD_OIDC_ISSUER); sign in with a password if it offers one.",
                404,
            )
        try:
            return_to = safe_return_to(request.query_params.get("return_to"))
            url, login = await self.oidc.begin(return_to)
        except SignInRefused as e:
            return pages.page("Cannot sign in", e.message, e.status)
        response = pages.redirect(url)
        response.set_cookie(
            LOGIN_COOKIE,
            self.sealer.seal(login),
            max_age=int(LOGIN_TTL.total_seconds()),
            path="/auth",
            httponly=True,
            secure=self.secure,
            samesite="lax",
        )
        return response

    async def callback(self, request: Request) -> Response:
        if self.oidc is None:
            return pages.page("No identity provider", "This Dockyard has none configured.", 404)
        sealed = request.cookies.get(LOGIN_COOKIE, "")
        try:
            if not sealed:
                raise SignInRefused(
                    "this browser has no sign-in in progress (cookies off, or it expired):"
                    " start again"
                )
            login = self.sealer.open(sealed)
            identity = await self.oidc.finish(login, dict(request.query_params))
            old = request.cookies.get(sessions.COOKIE) or None
            issued = await self.svc.run_db(self._bind_and_start, identity, old)
        except SignInRefused as e:
            log.warning(
                "sign-in refused",
                extra={"request_id": request_ids.current(), "reason": e.message},
            )
            response = pages.page("Sign-in refused", e.message, e.status)
            response.delete_cookie(LOGIN_COOKIE, path="/auth")
            return response
        response = self._set_session(pages.redirect(login.return_to), issued)
        response.delete_cookie(LOGIN_COOKIE, path="/auth")
        return response

    async def logout(self, request: Request) -> Response:
        """Ends the browser's session for good; a dead or missing one is already ended."""
        caller = await authenticate(self.svc, _cookie_only(request), unsafe=True)
        if isinstance(caller, Refusal) and caller.status == 403:
            return pages.error(caller.message, 403)
        cookie = request.cookies.get(sessions.COOKIE, "")
        if cookie:
            await self.svc.run_db(self._end, cookie)
        return self._clear_session(pages.answer({"signedOut": True}))

    def _end(self, secret: str) -> None:
        with self.svc.db.transaction() as session:
            sessions.end(session, self.svc.clock, secret)

    async def password(self, request: Request) -> Response:
        if not self.svc.settings.embedded:
            return pages.error(
                "password sign-in is only offered by the embedded default (SQLite):"
                " sign in with your identity provider at /auth/login",
                404,
            )
        if "application/json" not in request.headers.get("content-type", ""):
            return pages.error('send {"email": ..., "password": ...} as application/json', 415)
        body = await _small_json(request)
        email, secret = (body or {}).get("email"), (body or {}).get("password")
        if not isinstance(email, str) or not isinstance(secret, str):
            return pages.error('send {"email": ..., "password": ...} as strings', 400)
        wait = self.failures.wait(email, self.svc.clock.now())
        if wait:
            refused = pages.error(
                f"too many failed sign-ins for this e-mail; try again in {wait} s", 429
            )
            refused.headers["Retry-After"] = str(wait)
            log.warning("password sign-in throttled", extra={"retry_after_s": wait})
            return refused
        user_id = await self.svc.run_db(self._check_password, email, secret)
        if user_id is None:
            self.failures.failed(email, self.svc.clock.now())
            return pages.error("wrong e-mail or password", 401)
        self.failures.succeeded(email)
        old = request.cookies.get(sessions.COOKIE) or None
        issued = await self.svc.run_db(self._start, user_id, old)
        return self._set_session(pages.answer({"userId": str(user_id)}), issued)

    def _check_password(self, email: str, secret: str) -> uuid.UUID | None:
        with self.svc.db.reader() as session:
            return passwords.check_login(session, email, secret)

    async def me(self, request: Request) -> Response:
        caller = await authenticate(self.svc, request, unsafe=False)
        if isinstance(caller, Refusal):
            return pages.error(caller.message, caller.status)
        found = await self.svc.run_db(self._profile, caller.principal)
        if found is None:
            return pages.error("only a user has a profile", 401)
        return pages.answer(found)

    def _profile(self, principal: Principal) -> dict[str, Any] | None:
        with self.svc.db.transaction(principal.tenant_ids) as session:
            return profile(session, principal)

    async def config(self, request: Request) -> Response:
        settings = self.svc.settings
        return pages.answer({"oidc": settings.oidc_enabled, "password": settings.embedded})


def _cookie_only(request: Request) -> Request:
    """The request as sign-out sees it: only its cookie counts, never a bearer token."""
    scope = dict(request.scope)
    scope["headers"] = [(k, v) for k, v in request.scope["headers"] if k != b"authorization"]
    return Request(scope)


async def _small_json(request: Request) -> dict[str, Any] | None:
    size = 0
    chunks = []
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_PASSWORD_BODY:
            return None
        chunks.append(chunk)
    try:
        value = json.loads(b"".join(chunks))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def routes(svc: Services) -> list[BaseRoute]:
    return AuthRoutes(svc).routes()
