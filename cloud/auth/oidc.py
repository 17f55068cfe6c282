"""Sign-in with the company's OpenID provider: the authorization-code flow with S256 PKCE.

authlib's OAuth 2.0 client (over httpx) builds the authorization URL with the code challenge
and redeems the code with its verifier; the ID token is then checked with joserfc (authlib's
JOSE library): its signature against the provider's published keys, its issuer, its audience
(this client), its expiry against the injected clock and the nonce this login sent. The
state, nonce and verifier of a login in flight ride in a short-lived cookie signed by the
cloud (`LoginState`), so any replica can finish a login another began.

Users are matched by (issuer, subject). The first sign-in of an invited person (a users row
with that e-mail and no subject yet, as `dockyard bootstrap` or an invitation makes) binds
the row by the provider's verified e-mail; anyone else is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid
import warnings
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, cast

import httpx
from authlib.common.errors import AuthlibBaseError
from authlib.deprecate import AuthlibDeprecationWarning
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from sqlalchemy import select
from sqlalchemy.orm import Session

from dockyard.cloud.domain.clock import Clock
from dockyard.cloud.store.models import User

with warnings.catch_warnings():
    # authlib 1.9 would rather run on httpx2; the httpx it falls back to is this project's.
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client

SCOPE = "openid email profile"
LOGIN_COOKIE = "dockyard_login"
LOGIN_TTL = timedelta(minutes=10)
# ID token algorithms accepted: asymmetric only (an HS256 token would be signed with the
# client secret, which this cloud also holds).
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]
LEEWAY_S = 60


class SignInRefused(Exception):
    """A sign-in that cannot go on; `message` is shown to the person as it is."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class LoginState:
    """One login in flight, from /auth/login to /auth/callback."""

    state: str
    nonce: str
    verifier: str
    return_to: str
    started: float


@dataclass(frozen=True)
class Identity:
    issuer: str
    subject: str
    email: str
    email_verified: bool
    name: str


class LoginSealer:
    """Signs the login cookie with a key derived from the cloud's secret (HMAC-SHA256)."""

    def __init__(self, secret: bytes, clock: Clock) -> None:
        self.key = hmac.new(secret, b"dockyard portal login state", hashlib.sha256).digest()
        self.clock = clock

    def seal(self, login: LoginState) -> str:
        body = base64.urlsafe_b64encode(json.dumps(asdict(login)).encode()).decode()
        mac = hmac.new(self.key, body.encode(), hashlib.sha256).hexdigest()
        return f"{body}.{mac}"

    def open(self, sealed: str) -> LoginState:
        body, _, mac = sealed.rpartition(".")
        good = hmac.new(self.key, body.encode(), hashlib.sha256).hexdigest()
        if not body or not hmac.compare_digest(mac, good):
            raise SignInRefused("this sign-in was not started here: start again")
        try:
            login = LoginState(**json.loads(base64.urlsafe_b64decode(body)))
        except (ValueError, TypeError):
            raise SignInRefused("this sign-in was not started here: start again") from None
        if self.clock.now().timestamp() - login.started > LOGIN_TTL.total_seconds():
            raise SignInRefused("this sign-in took too long: start again")
        return login


class OidcClient:
    """The cloud as a relying party of one provider. Discovery and keys are fetched on
    first use and kept; the keys are fetched again once when a token names an unknown one."""

    def __init__(
        self, issuer: str, client_id: str, client_secret: str, redirect_uri: str, clock: Clock
    ) -> None:
        self.issuer = issuer
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.clock = clock
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None

    def _client(self) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            self.client_id,
            self.client_secret,
            scope=SCOPE,
            redirect_uri=self.redirect_uri,
            code_challenge_method="S256",
            timeout=10,
        )

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            url = f"{self.issuer}/.well-known/openid-configuration"
            found = await _get_json(url)
            if found.get("issuer") != self.issuer:
                raise SignInRefused("the identity provider names another issuer", 502)
            self._metadata = found
        return self._metadata

    async def keys(self, refresh: bool = False) -> KeySet:
        if self._keys is None or refresh:
            found = await _get_json((await self.metadata())["jwks_uri"])
            try:
                self._keys = KeySet.import_key_set(cast(Any, found))
            except (JoseError, ValueError, KeyError, TypeError) as e:
                raise SignInRefused(f"the identity provider's keys are unusable: {e}", 502) from e
        return self._keys

    async def begin(self, return_to: str) -> tuple[str, LoginState]:
        """The provider's authorization URL for a new login, and that login's state."""
        meta = await self.metadata()
        login = LoginState(
            state=secrets.token_urlsafe(24),
            nonce=secrets.token_urlsafe(24),
            verifier=secrets.token_urlsafe(48),
            return_to=return_to,
            started=self.clock.now().timestamp(),
        )
        async with self._client() as client:
            url, _ = client.create_authorization_url(
                meta["authorization_endpoint"],
                state=login.state,
                code_verifier=login.verifier,
                nonce=login.nonce,
            )
        return url, login

    async def finish(self, login: LoginState, params: dict[str, str]) -> Identity:
        """The person the provider vouches for, from the callback's query parameters."""
        if "error" in params:
            detail = params.get("error_description") or params["error"]
            raise SignInRefused(f"the identity provider refused the sign-in: {detail}", 403)
        if not hmac.compare_digest(params.get("state", ""), login.state):
            raise SignInRefused("this answer is not for the sign-in this browser started")
        if "iss" in params and params["iss"] != self.issuer:
            raise SignInRefused("this answer comes from another identity provider")
        code = params.get("code", "")
        if not code:
            raise SignInRefused("the identity provider sent no authorization code")
        meta = await self.metadata()
        try:
            async with self._client() as client:
                token = await client.fetch_token(
                    meta["token_endpoint"], code=code, code_verifier=login.verifier
                )
        except (AuthlibBaseError, httpx.HTTPError) as e:
            raise SignInRefused(f"the identity provider did not redeem the code: {e}", 502) from e
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise SignInRefused("the identity provider sent no ID token", 502)
        identity = await self.validate(id_token, login.nonce)
        if identity.email or not meta.get("userinfo_endpoint"):
            return identity
        return await self._userinfo(identity, meta["userinfo_endpoint"], token)

    async def _userinfo(self, identity: Identity, url: str, token: dict[str, Any]) -> Identity:
        """The e-mail and name from the userinfo endpoint, for a provider that keeps them
        out of the ID token (as the OpenID spec's strict reading does); its `sub` must be
        the ID token's."""
        try:
            async with self._client() as client:
                client.token = token
                response = await client.get(url)
                response.raise_for_status()
                info = response.json()
        except (AuthlibBaseError, httpx.HTTPError, ValueError) as e:
            raise SignInRefused(f"the identity provider's userinfo did not answer: {e}", 502) from e
        if not isinstance(info, dict) or info.get("sub") != identity.subject:
            raise SignInRefused("the identity provider's userinfo is about someone else", 403)
        return Identity(
            issuer=identity.issuer,
            subject=identity.subject,
            email=str(info.get("email") or "").strip().lower(),
            email_verified=info.get("email_verified") is True,
            name=identity.name or str(info.get("name") or ""),
        )

    async def validate(self, id_token: str, nonce: str) -> Identity:
        """The ID token's identity once its signature and claims hold; refused otherwise."""
        try:
            try:
                decoded = jwt.decode(id_token, await self.keys(), algorithms=ALGORITHMS)
            except InvalidKeyIdError:  # a key this set lacks: the provider may have rotated
                decoded = jwt.decode(id_token, await self.keys(refresh=True), algorithms=ALGORITHMS)
            jwt.JWTClaimsRegistry(
                now=lambda: int(self.clock.now().timestamp()),
                leeway=LEEWAY_S,
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.client_id},
                sub={"essential": True},
                exp={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(decoded.claims)
        except (JoseError, ValueError) as e:
            raise SignInRefused(f"the ID token was refused ({e})", 403) from e
        claims = decoded.claims
        return Identity(
            issuer=self.issuer,
            subject=str(claims["sub"]),
            email=str(claims.get("email") or "").strip().lower(),
            email_verified=claims.get("email_verified") is True,
            name=str(claims.get("name") or ""),
        )


async def _get_json(url: str) -> dict[str, Any]:
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(url)
            response.raise_for_status()
            found = response.json()
    except (httpx.HTTPError, ValueError) as e:
        raise SignInRefused(f"the identity provider did not answer ({url}): {e}", 502) from e
    if not isinstance(found, dict):
        raise SignInRefused(f"the identity provider answered no JSON object at {url}", 502)
    return found


def bind_user(session: Session, identity: Identity) -> uuid.UUID:
    """The user this identity signs in as: the one bound to (issuer, subject), else an
    invited one (its e-mail, no subject yet) bound now by the verified e-mail."""
    bound = session.scalar(
        select(User).where(
            User.oidc_issuer == identity.issuer, User.oidc_subject == identity.subject
        )
    )
    if bound is not None:
        return bound.id
    if not identity.email:
        raise SignInRefused("the identity provider gave no e-mail address to match", 403)
    invited = session.scalar(select(User).where(User.email == identity.email))
    if invited is None:
        raise SignInRefused(
            f"{identity.email} has not been invited to Dockyard: ask a tenant's owner to"
            " invite this address",
            403,
        )
    if invited.oidc_subject is not None:
        raise SignInRefused(
            f"{identity.email} already signs in with another account: ask a tenant's owner",
            403,
        )
    if not identity.email_verified:
        raise SignInRefused(
            f"the identity provider has not verified {identity.email}: verify it there first",
            403,
        )
    invited.oidc_issuer, invited.oidc_subject = identity.issuer, identity.subject
    if identity.name and not invited.name:
        invited.name = identity.name
    return invited.id
