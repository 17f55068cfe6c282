"""API tokens made in the portal: each limited to one tenant, where it carries its maker's
grants (never more: a role changed or removed later narrows the token with it), with an
expiry. The secret is shown once; only its SHA-256 is kept. `dockyard bootstrap` mints the
first, unlimited ones (`admin.py`).

Tokens are the user's, not tenant-owned rows (a token is resolved before any tenant is
known), so every read and change here is checked against the token's tenant explicitly.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select

from dockyard.cloud.store.models import ApiToken

from . import audit, text
from .context import Ctx
from .errors import Invalid, NotFound
from .pages import Page, PageRequest, keyset
from .permissions import Permission as P
from .secrets import hash_secret, new_secret

MAX_DAYS = 366
"""A token lives at most a year: one that leaks stops working on its own."""


@dataclass(frozen=True)
class Created:
    token: ApiToken
    secret: str
    """Shown once, in the answer that made it."""


def create(ctx: Ctx, tenant_id: uuid.UUID, name: str, expires_in_days: int) -> Created:
    ctx.principal.require(tenant_id, P.API_TOKEN_WRITE)
    if ctx.principal.kind != "user" or ctx.principal.id is None:
        raise Invalid("only a person holds API tokens")
    name = text.name("name", name)
    if not 1 <= expires_in_days <= MAX_DAYS:
        raise Invalid(f"expiresInDays is between 1 and {MAX_DAYS}")
    now = ctx.now()
    secret = new_secret("dy_pat")
    token = ApiToken(
        user_id=ctx.principal.id,
        tenant_id=tenant_id,
        token_hash=hash_secret(secret),
        name=name,
        created_at=now,
        expires_at=now + timedelta(days=expires_in_days),
    )
    ctx.session.add(token)
    ctx.session.flush()
    audit.record(
        ctx,
        tenant_id,
        "api_token.create",
        target=str(token.id),
        name=name,
        expires_at=token.expires_at.isoformat() if token.expires_at else None,
    )
    return Created(token, secret)


def listing(
    ctx: Ctx, tenant_id: uuid.UUID, request: PageRequest, *, include_revoked: bool = False
) -> Page[ApiToken]:
    """The tenant's tokens, newest first; revoked ones only when asked."""
    ctx.principal.require(tenant_id, P.API_TOKEN_READ)
    stmt = select(ApiToken).where(ApiToken.tenant_id == tenant_id)
    if not include_revoked:
        stmt = stmt.where(ApiToken.revoked_at.is_(None))
    return keyset(ctx.session, stmt, ApiToken.created_at, request, descending=True)


def revoke(ctx: Ctx, token_id: uuid.UUID) -> ApiToken:
    """Ends a token at once; its next request is refused. Revoking twice changes nothing."""
    token = ctx.session.get(ApiToken, token_id)
    if token is None or token.tenant_id is None:
        raise NotFound("API token")
    ctx.principal.require(token.tenant_id, P.API_TOKEN_WRITE, "API token")
    if token.revoked_at is None:
        token.revoked_at = ctx.now()
        audit.record(ctx, token.tenant_id, "api_token.revoke", target=str(token.id))
    return token
