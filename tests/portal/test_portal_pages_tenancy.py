"""Tenancy through the new pages' own traffic, as test_portal_tenancy.py does for the Agents
and VMs pages: Rae, an owner of tenant A, signs in for real and uses the Dashboard,
Policies, Jobs, Settings and Audit log pages; every GraphQL operation the portal sent is
replayed with her cookie and CSRF token, once with tenant B's ids in place of A's and once
with random ids. Each pair of answers must be equal (B's objects are as invisible as ones
that do not exist), no random id finds anything, and nothing of B's changes."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from dockyard.agent import protocol as p
from dockyard.cloud.domain import commands
from dockyard.cloud.domain.principal import Role
from dockyard.cloud.store.db import Database

from ..factories import Gql, World, make_world, system
from ..integration.test_vault_brokered import docked_link
from ..procs import Cloud
from .signin import CSRF_COOKIE, RAE, SESSION_COOKIE, cookies, invite, new_page, sign_in
from .test_portal_routes import built
from .test_portal_tenancy import graphql_posts, op_name, replay

pytestmark = pytest.mark.slow
OPERATIONS = {
    "PortalDashboard",
    "PortalPolicies",
    "PortalCreatePolicy",
    "PortalPolicy",
    "PortalPolicyTargets",
    "PortalNewPolicyVersion",
    "PortalAssignPolicy",
    "PortalUnassignPolicy",
    "PortalJobs",
    "PortalJob",
    "PortalCommand",
    "PortalTenant",
    "PortalSetFlowMode",
    "PortalMembers",
    "PortalInviteMember",
    "PortalChangeMemberRole",
    "PortalRemoveMember",
    "PortalApiTokens",
    "PortalCreateApiToken",
    "PortalRevokeApiToken",
    "PortalAuditLog",
}
SUCCESSES = {
    "Dashboard",
    "PolicyConnection",
    "Policy",
    "PolicyVersion",
    "PolicyVersionConnection",
    "PolicyAssignment",
    "PolicyAssignmentConnection",
    "SiteConnection",
    "AgentConnection",
    "JobConnection",
    "Job",
    "Command",
    "Tenant",
    "MemberConnection",
    "Member",
    "ApiTokenConnection",
    "NewApiToken",
    "ApiToken",
    "AuditRecordConnection",
}
POLICIES = """query($t: ID!) { policies(tenantId: $t) { ... on PolicyConnection { edges { node {
  id name currentVersion } } } } }"""
MEMBERS = """query($t: ID!) { members(tenantId: $t) { ... on MemberConnection { edges { node {
  userId email role } } } } }"""
TOKENS = """query($t: ID!) { apiTokens(tenantId: $t, includeRevoked: true) {
  ... on ApiTokenConnection { edges { node { id name revokedAt } } } } }"""
MAKE_TOKEN = """mutation($t: ID!) { createApiToken(tenantId: $t, name: "b's") {
  ... on NewApiToken { token { id } } } }"""
TENANT = """query($t: ID!) { tenant(id: $t) { ... on Tenant { flowMode } } }"""
CREATE_POLICY = """mutation($t: ID!) { createPolicy(tenantId: $t, name: "Greeter", kind: "noop",
  document: {}) { ... on Policy { id } } }"""


def _job(pg: Database, cloud: Cloud, world: World, tmp_path: Path) -> tuple[str, str]:
    link = docked_link(cloud, world, tmp_path, p.FlowMode.METADATA)
    assert link.agent_id is not None
    with system(pg, world.tenant_id) as ctx:
        command = commands.issue(ctx, uuid.UUID(link.agent_id), "noop.echo", {})
        return str(command.job_id), str(command.id)


def _read(cloud: Cloud, world: World) -> dict[str, Any]:
    gql, t = Gql(cloud.url, world.token), str(world.tenant_id)
    return {
        "policies": gql.nodes(POLICIES, t=t),
        "members": gql.nodes(MEMBERS, t=t),
        "tokens": gql.nodes(TOKENS, t=t),
        "tenant": gql.data(TENANT, t=t),
    }


def test_every_new_page_operation_with_another_tenants_ids_answers_as_for_a_missing_id(
    cloud: Cloud, pg: Database, browser: Any, tmp_path: Path
) -> None:
    built()
    a, b = (make_world(pg, flow=p.FlowMode.METADATA, plan="standard") for _ in range(2))
    a_job, a_command = _job(pg, cloud, a, tmp_path)
    b_job, b_command = _job(pg, cloud, b, tmp_path)
    b_policy = Gql(cloud.url, b.token).data(CREATE_POLICY, t=str(b.tenant_id))["createPolicy"]
    invite(pg, RAE, (a.tenant_id,), Role.OWNER)
    page = new_page(browser)
    sent = graphql_posts(page, cloud)

    base = f"/portal/t/{a.tenant_id}"
    sign_in(page, cloud, RAE, f"{base}/dashboard")
    page.get_by_role("heading", name="Dashboard").wait_for()
    page.get_by_text("Jobs finished per day").wait_for()
    page.get_by_role("link", name="Policies").click()
    page.get_by_label("Name").fill("Greeter")
    page.get_by_label("Kind").fill("noop")
    page.get_by_role("button", name="Create policy").click()
    page.get_by_label("interval s").fill("90")
    page.get_by_role("button", name="Save as version 2").click()
    page.get_by_role("button", name="Save as version 3").wait_for()
    page.get_by_role("button", name="Assign", exact=True).click()
    page.get_by_role("button", name="Unassign from The whole tenant").click()
    page.get_by_text("Not assigned").wait_for()
    page.goto(cloud.url + f"{base}/jobs")
    page.get_by_role("link", name="noop.echo").click()
    page.get_by_role("heading", name="Waiting for the agent").wait_for()
    page.get_by_text("not yet fetched by the agent").wait_for()
    page.get_by_role("link", name="Settings").click()
    page.get_by_role("radio", name="Config only").check()
    page.get_by_role("button", name="Change the flow mode").click()
    page.get_by_text("The flow mode is now config.").wait_for()
    newcomer = f"newcomer-{uuid.uuid4().hex[:6]}@example.com"
    page.get_by_label("E-mail").fill(newcomer)
    page.get_by_role("button", name="Invite").click()
    role = page.get_by_label(f"Role of {newcomer}")
    role.select_option("OPERATOR")
    page.wait_for_function(
        "e => !document.getElementById(e).disabled", arg=role.get_attribute("id")
    )
    page.locator("tr", has_text=newcomer).get_by_role("button", name="Remove").click()
    page.get_by_role("dialog").get_by_role("button", name="Remove member").click()
    page.locator("tr", has_text=newcomer).wait_for(state="detached")
    page.get_by_label("Name", exact=True).fill("replayed")
    page.get_by_role("button", name="Create API token").click()
    page.get_by_label("Secret").wait_for()
    page.get_by_role("button", name="Revoke replayed").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke token").click()
    page.locator("tr", has_text="replayed").get_by_text("Revoked").wait_for()
    page.get_by_role("link", name="Audit log").click()
    page.get_by_label("Action starts with").fill("member.")
    page.get_by_role("button", name="Apply filters").click()
    page.get_by_text("member.remove").wait_for()

    jar = cookies(page.context, cloud)
    session, csrf = jar[SESSION_COOKIE]["value"], jar[CSRF_COOKIE]["value"]
    operations = list({json.dumps(body, sort_keys=True): body for body in sent}.values())
    assert {op_name(o) for o in operations} == OPERATIONS

    # A's ids as the walk used them, each with B's counterpart of the same kind.
    owner = Gql(cloud.url, a.token)
    a_policy = owner.nodes(POLICIES, t=str(a.tenant_id))[0]["id"]
    a_token = next(t for t in owner.nodes(TOKENS, t=str(a.tenant_id)) if t["name"] == "replayed")
    newcomer_id = next(
        str(i)
        for o in operations
        if op_name(o) == "PortalRemoveMember"
        for i in [o["variables"]["userId"]]
    )
    made = Gql(cloud.url, b.token).data(MAKE_TOKEN, t=str(b.tenant_id))["createApiToken"]
    b_token = made["token"]["id"]
    to_b = {
        str(a.tenant_id): str(b.tenant_id),
        a_policy: b_policy["id"],
        a_job: b_job,
        a_command: b_command,
        newcomer_id: str(b.user_id),
        a_token["id"]: b_token,
    }
    names = dict(zip(to_b, ("tenant", "policy", "job", "command", "member", "token"), strict=True))
    b_before = _read(cloud, b)
    replayed = replay(cloud, (session, csrf), operations, to_b, names, SUCCESSES)
    page.context.close()
    assert replayed == OPERATIONS
    assert _read(cloud, b) == b_before, "a replay with B's ids changed B"
