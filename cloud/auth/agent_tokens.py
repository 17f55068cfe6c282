"""Access tokens for agents, from the OAuth 2.0 client-credentials grant with a
`private_key_jwt` client assertion (RFC 7523).

The assertion must be signed with EdDSA by the agent's enrolled Ed25519 key, name the
configured public token URL as its audience (never a Host header), expire within five
minutes, and carry a `jti` never seen before. The access token is a short JWT signed by the
cloud (HS256, shared by replicas); it names the agent and its tenant, never the flow mode,
which is read afresh on every request.
"""

from __future__ import annotations

import base64
import json
import uuid
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from authlib.oauth2.rfc6749 import InvalidClientError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey, OKPKey

from dockyard.agent.protocol import ASSERTION_MAX_LIFETIME_S
from dockyard.cloud.domain.clock import Clock
from dockyard.cloud.domain.errors import Unauthenticated

# RFC 9864 renames EdDSA to Ed25519; our protocol pins the name EdDSA, which joserfc warns of.
warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=Warning)

ALGORITHM = "EdDSA"
ACCESS_AUDIENCE = "dockyard-agent-api"
TOKEN_LEEWAY_S = 5
VERIFIED_CACHE_SIZE = 100_000


def public_key_from_b64(raw_b64: str) -> OKPKey:
    raw = base64.urlsafe_b64decode(raw_b64 + "=")
    if len(raw) != 32:
        raise Unauthenticated("an agent key is 32 bytes of Ed25519")
    return OKPKey.import_key({"kty": "OKP", "crv": "Ed25519", "x": raw_b64})


@dataclass(frozen=True)
class Assertion:
    agent_id: uuid.UUID
    jti: str
    expires_at: datetime


class _AssertionRules(JWTBearerClientAssertion):  # type: ignore[misc]
    """authlib's RFC 7523 claim checks, with the audience fixed and the algorithm pinned."""

    def __init__(self, token_url: str, clock: Clock) -> None:
        super().__init__(validate_jti=True, leeway=30)
        self._token_url = token_url
        self._clock = clock

    def get_audiences(self) -> list[str]:
        return [self._token_url]

    def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
        return isinstance(jti, str) and 8 <= len(jti) <= 128

    def check(self, assertion: str, key: OKPKey) -> dict[str, Any]:
        headers, _ = self.extract_assertion(assertion)
        if headers.get("alg") != ALGORITHM:
            raise InvalidClientError(description="client assertions must be signed with EdDSA")
        try:
            token = jwt.decode(assertion, key, algorithms=[ALGORITHM])
        except JoseError as e:
            raise InvalidClientError(description=f"bad client assertion: {e.error}") from e
        claims: dict[str, Any] = dict(token.claims)
        # joserfc validates `exp` against the wall clock; the rest reads our clock.
        now = self._clock.now().timestamp()
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp < now - self.leeway:
            raise InvalidClientError(description="the client assertion has expired")
        if exp > now + ASSERTION_MAX_LIFETIME_S + self.leeway:
            raise InvalidClientError(description="a client assertion may live at most 5 minutes")
        self.verify_claims(claims)
        return claims


class AgentTokens:
    def __init__(self, secret: bytes, token_url: str, clock: Clock, ttl_s: int = 600) -> None:
        self._key = OctKey.import_key(secret)
        self._rules = _AssertionRules(token_url, clock)
        self._issuer = token_url
        self._clock = clock
        self.ttl_s = ttl_s
        # Tokens already verified, with their expiry: an agent presents the same token on
        # every poll for its whole life, and decoding it again cost more than the rest of
        # a quiet poll. Bounded; a full cache is simply emptied.
        self._verified: dict[str, tuple[uuid.UUID, uuid.UUID, int]] = {}

    @staticmethod
    def claimed_agent(assertion: str) -> uuid.UUID:
        """The agent an assertion claims to come from, read before any check, to find its key."""
        try:
            claims = json.loads(jws.extract_compact(assertion.encode()).payload)
            return uuid.UUID(str(claims.get("sub")))
        except (JoseError, ValueError, TypeError, AttributeError):
            raise Unauthenticated("the client assertion is not a JWT naming an agent") from None

    def verify_assertion(self, assertion: str, public_key_b64: str) -> Assertion:
        try:
            claims = self._rules.check(assertion, public_key_from_b64(public_key_b64))
        except InvalidClientError as e:
            raise Unauthenticated(e.description or "invalid client assertion") from None
        return Assertion(
            agent_id=uuid.UUID(claims["sub"]),
            jti=str(claims["jti"]),
            expires_at=datetime.fromtimestamp(claims["exp"], UTC),
        )

    def issue(self, agent_id: uuid.UUID, tenant_id: uuid.UUID) -> str:
        now = int(self._clock.now().timestamp())
        claims = {
            "iss": self._issuer,
            "aud": ACCESS_AUDIENCE,
            "sub": str(agent_id),
            "tid": str(tenant_id),
            "iat": now,
            "exp": now + self.ttl_s,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode({"alg": "HS256"}, claims, self._key, algorithms=["HS256"])

    def verify(self, token: str) -> tuple[uuid.UUID, uuid.UUID]:
        now = int(self._clock.now().timestamp())
        known = self._verified.get(token)
        if known is not None:
            agent_id, tenant_id, exp = known
            if now <= exp + TOKEN_LEEWAY_S:
                return agent_id, tenant_id
            del self._verified[token]
        agent_id, tenant_id, exp = self._decode(token, now)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (agent_id, tenant_id, exp)
        return agent_id, tenant_id

    def _decode(self, token: str, now: int) -> tuple[uuid.UUID, uuid.UUID, int]:
        try:
            decoded = jwt.decode(token, self._key, algorithms=["HS256"])
            claims = decoded.claims
            rules = jwt.JWTClaimsRegistry(
                now=now,
                leeway=TOKEN_LEEWAY_S,
                iss={"essential": True, "value": self._issuer},
                aud={"essential": True, "value": ACCESS_AUDIENCE},
                exp={"essential": True},
                sub={"essential": True},
            )
            rules.validate(claims)
            return uuid.UUID(claims["sub"]), uuid.UUID(claims["tid"]), int(claims["exp"])
        except (JoseError, KeyError, ValueError, TypeError):
            raise Unauthenticated("the access token is invalid or has expired") from None
