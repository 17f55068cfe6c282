"""unassignPolicy through GraphQL: the assignment ends, the agents it alone reached are told
in their sequence, the act is audited; a viewer is refused; another tenant's ids answer as
missing ones. Over HTTP, against the real cloud on PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from dockyard.cloud.domain.principal import Role
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import AgentEntry

from ..factories import (
    Gql,
    World,
    add_user,
    answers_as_missing,
    audit_log,
    enrol_agent,
    make_world,
    refusals,
    system,
)
from ..procs import Cloud

CREATE = """mutation($t: ID!) { createPolicy(tenantId: $t, name: "quiet hours", kind: "noop",
  document: {}) { __typename ... on Policy { id } } }"""
ASSIGN = """mutation($p: ID!, $k: PolicyTarget!, $id: ID!) { assignPolicy(policyId: $p,
  targetKind: $k, targetId: $id) { __typename } }"""
UNASSIGN = """mutation($p: ID!, $k: PolicyTarget!, $id: ID!) { unassignPolicy(policyId: $p,
  targetKind: $k, targetId: $id) { __typename ... on PolicyAssignment { policyId targetKind
  targetId } ... on Error { message } } }"""


def _policy(gql: Gql, world: World) -> str:
    made = gql.data(CREATE, t=str(world.tenant_id))["createPolicy"]
    assert made["__typename"] == "Policy", made
    policy_id: str = made["id"]
    return policy_id


def _told(world: World, agent_id: Any) -> list[bool]:
    """What the agent's sequence said of policies, in order: assigned or not."""
    with system(world.db, world.tenant_id) as ctx:
        entries = ctx.session.scalars(
            select(AgentEntry)
            .where(AgentEntry.agent_id == agent_id, AgentEntry.kind == "policy")
            .order_by(AgentEntry.seq)
        )
        return [e.payload["assigned"] for e in entries]


def test_unassigning_tells_the_agents_it_alone_reached_and_is_audited(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    world = make_world(pg)
    agent_id = enrol_agent(world, tmp_path)
    admin_id, token = add_user(pg, world.tenant_id, Role.ADMIN)
    gql = Gql(cloud.url, token)
    policy = _policy(gql, world)
    site, tenant = str(world.site_id), str(world.tenant_id)
    for kind, target in (("SITE", site), ("TENANT", tenant)):
        assert gql.data(ASSIGN, p=policy, k=kind, id=target)["assignPolicy"]["__typename"] == (
            "PolicyAssignment"
        )
    assert _told(world, agent_id) == [True]  # the second reached it already

    # The tenant's assignment still reaches the agent: it is not told anything.
    gone = gql.data(UNASSIGN, p=policy, k="SITE", id=site)["unassignPolicy"]
    assert gone == {
        "__typename": "PolicyAssignment",
        "policyId": policy,
        "targetKind": "SITE",
        "targetId": site,
    }
    assert _told(world, agent_id) == [True]
    last = gql.data(UNASSIGN, p=policy, k="TENANT", id=tenant)["unassignPolicy"]
    assert last["__typename"] == "PolicyAssignment"
    assert _told(world, agent_id) == [True, False]
    again = gql.data(UNASSIGN, p=policy, k="TENANT", id=tenant)["unassignPolicy"]
    assert again["__typename"] == "PolicyAssignmentNotFound"

    acts = [
        (a["action"], a["target"], a["detail"]["to"])
        for a in audit_log(gql, world.tenant_id)
        if a["action"] == "policy.unassign" and a["actorId"] == str(admin_id)
    ]
    assert acts == [
        ("policy.unassign", policy, f"site:{site}"),
        ("policy.unassign", policy, f"tenant:{tenant}"),
    ]


def test_a_viewer_unassigns_nothing_and_the_refusal_is_audited(cloud: Cloud, pg: Database) -> None:
    world = make_world(pg)
    owner = Gql(cloud.url, world.token)
    policy = _policy(owner, world)
    owner.data(ASSIGN, p=policy, k="SITE", id=str(world.site_id))
    viewer_id, token = add_user(pg, world.tenant_id, Role.VIEWER)
    answer = Gql(cloud.url, token).data(UNASSIGN, p=policy, k="SITE", id=str(world.site_id))
    assert answer["unassignPolicy"]["__typename"] == "PermissionDenied"
    assert refusals(owner, world.tenant_id) == [("policy:assign", str(viewer_id))]
    # Still assigned: the owner can end it.
    done = owner.data(UNASSIGN, p=policy, k="SITE", id=str(world.site_id))["unassignPolicy"]
    assert done["__typename"] == "PolicyAssignment"


def test_another_tenants_ids_answer_as_missing_ones(cloud: Cloud, pg: Database) -> None:
    mine, theirs = make_world(pg), make_world(pg)
    gql, their_gql = Gql(cloud.url, mine.token), Gql(cloud.url, theirs.token)
    my_policy, their_policy = _policy(gql, mine), _policy(their_gql, theirs)
    their_gql.data(ASSIGN, p=their_policy, k="SITE", id=str(theirs.site_id))
    by_policy = answers_as_missing(
        gql, UNASSIGN, "p", their_policy, k="SITE", id=str(theirs.site_id)
    )
    assert by_policy["data"]["unassignPolicy"]["__typename"] == "PolicyNotFound"
    by_target = answers_as_missing(gql, UNASSIGN, "id", theirs.site_id, p=my_policy, k="SITE")
    assert by_target["data"]["unassignPolicy"]["__typename"] == "PolicyAssignmentNotFound"
    # Theirs is untouched.
    kept = their_gql.data(UNASSIGN, p=their_policy, k="SITE", id=str(theirs.site_id))
    assert kept["unassignPolicy"]["__typename"] == "PolicyAssignment"
