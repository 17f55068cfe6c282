"""Access tokens: verified once, then remembered until they expire, never past it."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from dockyard.cloud.auth.agent_tokens import TOKEN_LEEWAY_S, AgentTokens
from dockyard.cloud.domain.clock import ManualClock, SystemClock
from dockyard.cloud.domain.errors import Unauthenticated

SECRET = b"test-secret-0123456789-0123456789-0123456789"
URL = "https://dock.example/agent/v1/token"


def test_a_remembered_token_still_expires() -> None:
    clock = ManualClock(SystemClock().now())
    tokens = AgentTokens(SECRET, URL, clock, ttl_s=60)
    agent_id, tenant_id = uuid.uuid4(), uuid.uuid4()
    token = tokens.issue(agent_id, tenant_id)
    assert tokens.verify(token) == (agent_id, tenant_id)
    clock.advance(timedelta(seconds=60 + TOKEN_LEEWAY_S))
    assert tokens.verify(token) == (agent_id, tenant_id), "within the leeway"
    clock.advance(timedelta(seconds=1))
    with pytest.raises(Unauthenticated, match="expired"):
        tokens.verify(token)
    with pytest.raises(Unauthenticated):
        tokens.verify(token)  # and not remembered as good again


def test_forged_and_foreign_tokens_are_refused_before_and_after_a_good_one() -> None:
    clock = ManualClock(SystemClock().now())
    tokens = AgentTokens(SECRET, URL, clock)
    other = AgentTokens(b"another-secret-0123456789-0123456789-012345", URL, clock)
    token = tokens.issue(uuid.uuid4(), uuid.uuid4())
    head, body, sig = token.split(".")
    forged = f"{head}.{body}.{sig[:-2]}{'AA' if sig[-2:] != 'AA' else 'BB'}"
    for bad in (forged, other.issue(uuid.uuid4(), uuid.uuid4()), "not a token"):
        with pytest.raises(Unauthenticated):
            tokens.verify(bad)
    tokens.verify(token)
    with pytest.raises(Unauthenticated):
        tokens.verify(forged)
