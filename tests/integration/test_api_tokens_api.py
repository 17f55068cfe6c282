"""API tokens through GraphQL, as the portal's settings page makes them: created with an
expiry and shown once, listed without their secret, revoked; each audited, refused for a
viewer, blind to other tenants; an expired or revoked token refused at the edge. Over
HTTP, against the real cloud on PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import update

from dockyard.cloud.api.graphql.schema import build_schema
from dockyard.cloud.domain import admin
from dockyard.cloud.domain.clock import SystemClock
from dockyard.cloud.domain.principal import Role
from dockyard.cloud.domain.secrets import hash_secret
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import ApiToken

from ..factories import Gql, add_user, answers_as_missing, audit_log, make_world, refusals
from ..procs import Cloud

CREATE = """mutation($t: ID!, $n: String!, $d: Int!) { createApiToken(tenantId: $t, name: $n,
  expiresInDays: $d) { __typename ... on NewApiToken { secret token { id tenantId name
  createdAt expiresAt lastUsedAt revokedAt } } ... on Error { message } } }"""
LIST = """query($t: ID!, $r: Boolean! = false) { apiTokens(tenantId: $t, includeRevoked: $r) {
  __typename ... on ApiTokenConnection { edges { node { id name expiresAt lastUsedAt revokedAt } } }
  ... on Error { message } } }"""
REVOKE = """mutation($id: ID!) { revokeApiToken(id: $id) { __typename
  ... on ApiToken { id revokedAt } ... on Error { message } } }"""
TENANTS = "{ tenants { ... on TenantConnection { edges { node { id } } } } }"


def _create(gql: Gql, tenant_id: Any, name: str = "ci", days: int = 30) -> dict[str, Any]:
    answer: dict[str, Any] = gql.data(CREATE, t=str(tenant_id), n=name, d=days)["createApiToken"]
    return answer


def _status(cloud: Cloud, secret: str) -> int:
    response = httpx.post(
        f"{cloud.url}/graphql",
        json={"query": "{ me { id } }"},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    )
    return response.status_code


def test_an_admin_creates_lists_and_revokes_a_token_each_audited(
    cloud: Cloud, pg: Database
) -> None:
    world = make_world(pg)
    admin_id, token = add_user(pg, world.tenant_id, Role.ADMIN)
    gql = Gql(cloud.url, token)
    made = _create(gql, world.tenant_id, "  nightly report ", 30)
    assert made["__typename"] == "NewApiToken", made
    secret, row = made["secret"], made["token"]
    assert secret.startswith("dy_pat_")
    assert (row["name"], row["tenantId"], row["revokedAt"]) == (
        "nightly report",
        str(world.tenant_id),
        None,
    )
    created = datetime.fromisoformat(row["createdAt"])
    assert datetime.fromisoformat(row["expiresAt"]) - created == timedelta(days=30)

    # The secret works at once, is never shown again, and is kept only as its hash.
    mine = Gql(cloud.url, secret)
    assert mine.data("{ me { id } }")["me"]["id"] == str(admin_id)
    listed = gql.nodes(LIST, t=str(world.tenant_id))
    assert [t["id"] for t in listed] == [row["id"]]
    assert listed[0]["lastUsedAt"] is not None  # it was used just now
    assert secret not in str(gql.raw(LIST, t=str(world.tenant_id)))
    api_token_type = build_schema()._schema.type_map["ApiToken"]
    assert not {"secret", "tokenHash"} & set(api_token_type.fields)  # type: ignore[union-attr]
    with pg.transaction() as session:
        stored = session.get(ApiToken, uuid.UUID(row["id"]))
        assert stored is not None
        assert stored.token_hash == hash_secret(secret)

    revoked = gql.data(REVOKE, id=row["id"])["revokeApiToken"]
    assert (revoked["__typename"], revoked["id"]) == ("ApiToken", row["id"])
    assert revoked["revokedAt"] is not None
    assert _status(cloud, secret) == 401
    assert gql.nodes(LIST, t=str(world.tenant_id)) == []
    assert [t["id"] for t in gql.nodes(LIST, t=str(world.tenant_id), r=True)] == [row["id"]]
    acts = [
        (a["action"], a["target"], a["outcome"])
        for a in audit_log(gql, world.tenant_id)
        if a["action"].startswith("api_token.")
    ]
    assert acts == [("api_token.create", row["id"], "ok"), ("api_token.revoke", row["id"], "ok")]


def test_a_token_is_limited_to_its_tenant_and_to_its_makers_grants_there(
    cloud: Cloud, pg: Database
) -> None:
    """The world's user owns the MSP and its child; a token made in the child sees the
    child alone, and loses what its maker loses there."""
    world = make_world(pg)
    owner = Gql(cloud.url, world.token)
    assert {str(world.msp_id), str(world.tenant_id)} <= {t["id"] for t in owner.nodes(TENANTS)}
    limited = Gql(cloud.url, _create(owner, world.tenant_id)["secret"])
    assert {t["id"] for t in limited.nodes(TENANTS)} == {str(world.tenant_id)}
    # Made in the MSP, a token reaches the MSP's children through it, as its maker does.
    from_msp = Gql(cloud.url, _create(owner, world.msp_id)["secret"])
    assert {t["id"] for t in from_msp.nodes(TENANTS)} == {str(world.msp_id), str(world.tenant_id)}
    # An admin's token made in the child can no longer act once the admin is a viewer.
    admin_id, admin_token = add_user(pg, world.tenant_id, Role.ADMIN)
    theirs = Gql(cloud.url, _create(Gql(cloud.url, admin_token), world.tenant_id)["secret"])
    assert theirs.data(LIST, t=str(world.tenant_id))["apiTokens"]["__typename"] == (
        "ApiTokenConnection"
    )
    demoted = owner.data(
        """mutation($t: ID!, $u: ID!) { changeMemberRole(tenantId: $t, userId: $u,
        role: VIEWER) { __typename } }""",
        t=str(world.tenant_id),
        u=str(admin_id),
    )
    assert demoted["changeMemberRole"]["__typename"] == "Member"
    assert theirs.data(LIST, t=str(world.tenant_id))["apiTokens"]["__typename"] == (
        "PermissionDenied"
    )


def test_an_expired_token_is_refused_at_the_edge(cloud: Cloud, pg: Database) -> None:
    world = make_world(pg)
    clock = SystemClock()
    with pg.transaction() as session:
        expired = admin.issue_api_token(
            session, clock, world.user_id, "old", expires_at=clock.now() - timedelta(seconds=1)
        )
        current = admin.issue_api_token(
            session, clock, world.user_id, "new", expires_at=clock.now() + timedelta(hours=1)
        )
    assert _status(cloud, expired) == 401
    assert _status(cloud, current) == 200
    # One made through the API stops working once its time is up.
    made = _create(Gql(cloud.url, world.token), world.tenant_id, days=1)
    assert _status(cloud, made["secret"]) == 200
    with pg.transaction() as session:
        session.execute(
            update(ApiToken)
            .where(ApiToken.token_hash == hash_secret(made["secret"]))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    response = httpx.post(
        f"{cloud.url}/graphql",
        json={"query": "{ me { id } }"},
        headers={"Authorization": f"Bearer {made['secret']}"},
        timeout=30,
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_an_expiry_out_of_range_or_a_bad_name_is_refused(cloud: Cloud, pg: Database) -> None:
    world = make_world(pg)
    gql = Gql(cloud.url, world.token)
    for name, days in (("ci", 0), ("ci", 367), ("ci", -5), ("", 30), ("a\x00b", 30)):
        answer = _create(gql, world.tenant_id, name, days)
        assert answer["__typename"] == "InvalidInput", (name, days, answer)
    assert gql.nodes(LIST, t=str(world.tenant_id)) == []


def test_a_viewer_makes_sees_and_revokes_no_token_each_refusal_audited(
    cloud: Cloud, pg: Database
) -> None:
    world = make_world(pg)
    viewer_id, token = add_user(pg, world.tenant_id, Role.VIEWER)
    owner = Gql(cloud.url, world.token)
    existing = _create(owner, world.tenant_id)["token"]["id"]
    gql = Gql(cloud.url, token)
    answers = [
        _create(gql, world.tenant_id),
        gql.data(LIST, t=str(world.tenant_id))["apiTokens"],
        gql.data(REVOKE, id=existing)["revokeApiToken"],
    ]
    assert [a["__typename"] for a in answers] == ["PermissionDenied"] * 3
    assert [t["id"] for t in owner.nodes(LIST, t=str(world.tenant_id))] == [existing]
    assert refusals(owner, world.tenant_id) == [
        ("api-token:write", str(viewer_id)),
        ("api-token:read", str(viewer_id)),
        ("api-token:write", str(viewer_id)),
    ]


def test_another_tenants_ids_answer_as_missing_ones(cloud: Cloud, pg: Database) -> None:
    mine, theirs = make_world(pg), make_world(pg)
    their_token = _create(Gql(cloud.url, theirs.token), theirs.tenant_id)
    gql = Gql(cloud.url, mine.token)
    listed = answers_as_missing(gql, LIST, "t", theirs.tenant_id)
    assert listed["data"]["apiTokens"]["__typename"] == "TenantNotFound"
    made = answers_as_missing(gql, CREATE, "t", theirs.tenant_id, n="x", d=1)
    assert made["data"]["createApiToken"]["__typename"] == "TenantNotFound"
    revoked = answers_as_missing(gql, REVOKE, "id", their_token["token"]["id"])
    assert revoked["data"]["revokeApiToken"]["__typename"] == "ApiTokenNotFound"
    assert _status(cloud, their_token["secret"]) == 200  # still alive
