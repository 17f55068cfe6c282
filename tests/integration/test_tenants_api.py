"""An MSP's owner or admin creates, renames and archives child tenants through GraphQL,
each act audited in the child and in the MSP; over HTTP, against the real cloud."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dockyard.cloud.domain import admin
from dockyard.cloud.domain.clock import SystemClock
from dockyard.cloud.domain.principal import Role
from dockyard.cloud.store.db import Database

from ..factories import Gql, add_user, enrol_agent, make_world
from ..procs import Cloud

AUDIT = """query($t: ID!) { auditLog(tenantId: $t, first: 100) { __typename
  ... on AuditRecordConnection { edges { node { action actorId target outcome } } } } }"""


def _audit(gql: Gql, tenant_id: str) -> list[dict[str, Any]]:
    log = gql.data(AUDIT, t=tenant_id)["auditLog"]
    return [e["node"] for e in log["edges"]]


def _create(gql: Gql, parent: str, name: str) -> dict[str, Any]:
    answer: dict[str, Any] = gql.data(
        """mutation($p: ID!, $n: String!) { createTenant(parentId: $p, name: $n) {
        __typename ... on Tenant { id name parentId kind archivedAt }
        ... on NameTaken { message } ... on PermissionDenied { message } } }""",
        p=parent,
        n=name,
    )["createTenant"]
    return answer


@pytest.mark.parametrize("role", [Role.OWNER, Role.ADMIN])
def test_an_msp_owner_or_admin_creates_a_child_audited_in_both(
    cloud: Cloud, pg: Database, role: Role
) -> None:
    world = make_world(pg)
    user_id, token = add_user(pg, world.msp_id, role)
    gql = Gql(cloud.url, token)
    child = _create(gql, str(world.msp_id), "Riverside School")
    assert child["__typename"] == "Tenant", child
    assert (child["name"], child["parentId"], child["kind"]) == (
        "Riverside School",
        str(world.msp_id),
        "CUSTOMER",
    )
    for tenant in (child["id"], str(world.msp_id)):
        made = [a for a in _audit(gql, tenant) if a["action"] == "tenant.create"]
        assert made == [
            {
                "action": "tenant.create",
                "actorId": str(user_id),
                "target": child["id"],
                "outcome": "ok",
            }
        ]
    # The new child is managed like any other: the MSP's member sees it and makes a site.
    listed = {
        t["id"]
        for t in gql.nodes("{ tenants { ... on TenantConnection { edges { node { id } } } } }")
    }
    assert child["id"] in listed
    site = gql.data(
        'mutation($t: ID!) { createSite(tenantId: $t, name: "hall") { __typename } }',
        t=child["id"],
    )["createSite"]
    assert site == {"__typename": "Site"}
    again = _create(gql, str(world.msp_id), "Riverside School")
    assert again["__typename"] == "NameTaken"


def test_an_operator_of_the_msp_creates_nothing_and_the_refusal_is_audited(
    cloud: Cloud, pg: Database
) -> None:
    world = make_world(pg)
    _, token = add_user(pg, world.msp_id, Role.OPERATOR)
    refused = _create(Gql(cloud.url, token), str(world.msp_id), "Nope")
    assert refused["__typename"] == "PermissionDenied"
    owner = Gql(cloud.url, world.token)
    assert [
        t["name"]
        for t in owner.nodes("{ tenants { ... on TenantConnection { edges { node { name } } } } }")
        if t["name"] == "Nope"
    ] == []
    log = _audit(owner, str(world.msp_id))
    assert [(a["action"], a["outcome"]) for a in log if a["outcome"] == "refused"] == [
        ("tenant:child:create", "refused")
    ]


def test_an_msp_admin_renames_a_child_audited_in_both(cloud: Cloud, pg: Database) -> None:
    world = make_world(pg)
    user_id, token = add_user(pg, world.msp_id, Role.ADMIN)
    gql = Gql(cloud.url, token)
    renamed = gql.data(
        """mutation($t: ID!) { renameTenant(tenantId: $t, name: "  North Campus ") {
        __typename ... on Tenant { name } } }""",
        t=str(world.tenant_id),
    )["renameTenant"]
    assert renamed == {"__typename": "Tenant", "name": "North Campus"}
    for tenant in (world.tenant_id, world.msp_id):
        rows = [a for a in _audit(gql, str(tenant)) if a["action"] == "tenant.rename"]
        assert [(a["actorId"], a["target"]) for a in rows] == [(str(user_id), str(world.tenant_id))]
    empty = gql.data(
        """mutation($t: ID!) { renameTenant(tenantId: $t, name: "   ") {
        __typename ... on InvalidInput { message } } }""",
        t=str(world.tenant_id),
    )["renameTenant"]
    assert empty["__typename"] == "InvalidInput"


def test_an_msp_owner_archives_a_child_its_agents_are_revoked_and_it_takes_no_changes(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    world = make_world(pg)
    enrol_agent(world, tmp_path)
    user_id, token = add_user(pg, world.msp_id, Role.OWNER)
    gql = Gql(cloud.url, token)
    archived = gql.data(
        """mutation($t: ID!) { archiveTenant(tenantId: $t) {
        __typename ... on Tenant { archivedAt } } }""",
        t=str(world.tenant_id),
    )["archiveTenant"]
    assert archived["__typename"] == "Tenant"
    assert archived["archivedAt"]
    for tenant in (world.tenant_id, world.msp_id):
        rows = [a for a in _audit(gql, str(tenant)) if a["action"] == "tenant.archive"]
        assert [(a["actorId"], a["target"]) for a in rows] == [(str(user_id), str(world.tenant_id))]
    agents = gql.data(
        """query($t: ID!) { agents(tenantId: $t, includeRevoked: true) {
        ... on AgentConnection { edges { node { revokedAt } } } } }""",
        t=str(world.tenant_id),
    )["agents"]["edges"]
    assert len(agents) == 1
    assert agents[0]["node"]["revokedAt"]
    site = gql.data(
        """mutation($t: ID!) { createSite(tenantId: $t, name: "late") {
        __typename ... on TenantArchived { message } } }""",
        t=str(world.tenant_id),
    )["createSite"]
    assert site == {
        "__typename": "TenantArchived",
        "message": "this tenant is archived: it takes no more changes",
    }
    # The child's own owner cannot archive it (only its MSP retires a customer).
    other = make_world(pg)
    _, own_token = add_user(pg, other.tenant_id, Role.OWNER)
    own = Gql(cloud.url, own_token).data(
        "mutation($t: ID!) { archiveTenant(tenantId: $t) { __typename } }", t=str(other.tenant_id)
    )["archiveTenant"]
    assert own["__typename"] == "PermissionDenied"


def test_me_tells_a_direct_grant_from_one_through_the_msp(cloud: Cloud, pg: Database) -> None:
    """An MSP owner with a viewer seat in a child sees the child twice, each grant saying
    how it is held and with its own role."""
    world = make_world(pg)
    user_id, token = add_user(pg, world.msp_id, Role.OWNER)
    with pg.transaction() as session:
        admin.ensure_membership(session, SystemClock(), world.tenant_id, user_id, Role.VIEWER)
    me = Gql(cloud.url, token).data("{ me { memberships { tenantId role via mspId } } }")["me"]
    msp, child = str(world.msp_id), str(world.tenant_id)
    assert sorted(me["memberships"], key=lambda m: (m["via"], m["tenantId"] == child)) == [
        {"tenantId": msp, "role": "OWNER", "via": "DIRECT", "mspId": None},
        {"tenantId": child, "role": "VIEWER", "via": "DIRECT", "mspId": None},
        {"tenantId": child, "role": "OWNER", "via": "MSP", "mspId": msp},
    ]
