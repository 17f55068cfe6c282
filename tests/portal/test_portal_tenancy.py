"""Tenancy through the portal's own traffic (issue 18, point 7): Alice, an owner in tenant A
(and its MSP), signs in for real and walks every page and action the portal has; every
GraphQL operation it sent is recorded as sent (body JSON) and replayed with Alice's own
cookie and CSRF token, once with tenant B's ids put in place of A's and once with random
ids that name nothing. Each pair of answers must be equal, so B's objects are as invisible
to Alice as objects that do not exist, and nothing of B's changed."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from dockyard.cloud.domain.principal import Role
from dockyard.cloud.store.db import Database

from ..factories import Gql, World
from ..procs import Cloud
from ..vm.test_cloud_archive import vm
from .signin import (
    ALICE,
    CSRF_COOKIE,
    SESSION_COOKIE,
    cookies,
    invite,
    new_page,
    sign_in,
)
from .test_portal_routes import built
from .worlds import stocked

pytestmark = pytest.mark.slow
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
AGENTS = """query($t: ID!) { agents(tenantId: $t, first: 50, includeRevoked: true) {
  ... on AgentConnection { edges { node { id name revokedAt } } } } }"""
VMS = """query($t: ID!) { vms(tenantId: $t, first: 50) {
  ... on VmConnection { edges { node { id name lifeState sightings { id } } } } } }"""
SITES = """query($t: ID!) { sites(tenantId: $t, first: 50) {
  ... on SiteConnection { edges { node { id name } } } } }"""
# The portal's operations, by name: the walk below must have sent each of them.
OPERATIONS = {
    "PortalAgents",
    "PortalSites",
    "PortalCreateSite",
    "PortalCreateEnrolmentToken",
    "PortalRevokeAgent",
    "PortalVms",
    "PortalVm",
    "PortalPowerVm",
    "PortalArchiveVm",
    "PortalRestoreVm",
}
SUCCESSES = {
    "AgentConnection",
    "SiteConnection",
    "VmConnection",
    "Vm",
    "Site",
    "EnrolmentTokenCreated",
    "Agent",
    "Command",
}


@dataclass
class Tenant:
    """A world with two agents (one docked) and three VMs, and its ids by kind and name."""

    world: World
    ids: dict[str, str] = field(default_factory=dict)

    def read(self, cloud: Cloud) -> dict[str, Any]:
        """What a replay must not change: its agents, sites and VMs as its owner sees them."""
        gql, t = Gql(cloud.url, self.world.token), str(self.world.tenant_id)
        return {
            "agents": gql.nodes(AGENTS, t=t),
            "sites": gql.nodes(SITES, t=t),
            "vms": gql.nodes(VMS, t=t),
            "msp sites": gql.nodes(SITES, t=str(self.world.msp_id)),
        }


def tenant(cloud: Cloud, pg: Database, tmp_path: Path) -> Tenant:
    world = stocked(cloud, pg, tmp_path, vm("spare-vm", "off"))
    out = Tenant(world)
    out.ids = {"tenant": str(world.tenant_id), "msp": str(world.msp_id)}
    seen = out.read(cloud)
    out.ids |= {f"site {s['name']}": s["id"] for s in seen["sites"]}
    out.ids |= {f"agent {a['name']}": a["id"] for a in seen["agents"]}
    for v in seen["vms"]:
        out.ids[f"vm {v['name']}"] = v["id"]
        out.ids |= {f"sighting {v['name']} {i}": s["id"] for i, s in enumerate(v["sightings"])}
    assert len(seen["agents"]) == 2
    assert len(seen["vms"]) == 3
    return out


def substitute(value: Any, swap: dict[str, str]) -> Any:
    """`value` with every id in it swapped; an id the swap does not know fails the test (it
    would be replayed unchanged, and prove nothing)."""
    if isinstance(value, dict):
        return {k: substitute(v, swap) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, swap) for v in value]
    if isinstance(value, str) and UUID.fullmatch(value):
        assert value in swap, f"the portal sent an id this test cannot map: {value}"
        return swap[value]
    return value


def ids_in(value: Any) -> set[str]:
    return set(UUID.findall(json.dumps(value)))


def test_every_portal_operation_with_another_tenants_ids_answers_as_for_a_missing_id(
    cloud: Cloud, pg: Database, browser: Any, tmp_path: Path
) -> None:
    built()
    a, b = tenant(cloud, pg, tmp_path), tenant(cloud, pg, tmp_path)
    invite(pg, ALICE, (a.world.tenant_id, a.world.msp_id), Role.OWNER)
    page = new_page(browser)
    context = page.context
    sent = graphql_posts(page, cloud)

    # Every page and action the portal has, on A's objects.
    sign_in(page, cloud, ALICE, f"/portal/t/{a.world.tenant_id}/agents")
    page.locator("table tbody tr").first.wait_for()
    page.get_by_role("button", name="Create enrolment token").click()
    page.get_by_label("Dock command").wait_for()
    spare = page.locator("tr", has_text="noop 1")
    spare.get_by_role("button", name="Revoke h").click()
    page.get_by_role("dialog", name="Revoke h?").get_by_role("button", name="Revoke agent").click()
    spare.get_by_text("Revoked").wait_for()

    page.get_by_role("link", name="VMs").click()
    page.locator("tr", has_text="old-db").wait_for()
    page.get_by_role("button", name="Actions for old-db").click()
    page.get_by_role("menuitem", name="Restore and restart").click()
    page.get_by_role("status").filter(has_text="Restore and restart of old-db").wait_for()
    for name, action, operation in (
        ("web-01", "Shut down", "PortalPowerVm"),
        ("spare-vm", "Archive", "PortalArchiveVm"),
    ):
        page.get_by_role("button", name=f"Actions for {name}").click()
        page.get_by_role("menuitem", name=action).click()
        with page.expect_response(lambda r, op=operation: op in (r.request.post_data or "")):
            page.get_by_role("dialog").get_by_role("button", name=action).click()
    page.get_by_role("link", name="web-01").click()
    page.get_by_role("heading", name="Idleness").wait_for()

    page.get_by_role("link", name="Agents").click()
    page.get_by_role("combobox", name="Tenant").select_option(str(a.world.msp_id))
    page.get_by_role("heading", name="No agent has docked yet").wait_for()
    page.get_by_label("Site name").fill("Branch office")
    page.get_by_role("button", name="Create site").click()
    page.get_by_role("button", name="Create enrolment token").wait_for()

    jar = cookies(context, cloud)
    session, csrf = jar[SESSION_COOKIE]["value"], jar[CSRF_COOKIE]["value"]
    operations = {json.dumps(body, sort_keys=True): body for body in sent}.values()
    assert {op_name(o) for o in operations} == OPERATIONS

    b_before = b.read(cloud)
    a_ids = {v: k for k, v in a.ids.items()}
    to_b = {v: b.ids[k] for v, k in a_ids.items()}
    replayed = replay(cloud, (session, csrf), operations, to_b, a_ids, SUCCESSES)
    context.close()
    assert replayed == OPERATIONS
    assert b.read(cloud) == b_before, "a replay with B's ids changed B"


def graphql_posts(page: Any, cloud: Cloud) -> list[dict[str, Any]]:
    """Every GraphQL POST body the page sends from now on, as sent, in a list that grows."""
    sent: list[dict[str, Any]] = []
    page.on(
        "request",
        lambda r: (
            sent.append(r.post_data_json)
            if r.method == "POST" and r.url == cloud.url + "/graphql"
            else None
        ),
    )
    return sent


def replay(
    cloud: Cloud,
    signed_in: tuple[str, str],
    operations: Iterable[dict[str, Any]],
    to_b: dict[str, str],
    names: dict[str, str],
    found: set[str],
) -> set[str]:
    """Each operation sent again with the session and CSRF token `signed_in`, once with
    `to_b`'s ids and once with random ones: the answers must be equal (the swapped ids read
    back as `<name>`), 200, and show none of the `found` typenames at the top. Returns the
    operations' names."""
    session, csrf = signed_in
    replayed: set[str] = set()
    with httpx.Client(
        base_url=cloud.url,
        cookies={SESSION_COOKIE: session, CSRF_COOKIE: csrf},
        headers={"X-CSRF-Token": csrf},
        timeout=30,
    ) as client:
        for op in operations:
            used = ids_in(op["variables"])
            assert used, f"an operation that names no id: {op}"
            assert ids_in(op["query"]) == set(), "ids ride in variables, not in the text"
            to_missing = {i: str(uuid.uuid4()) for i in used}
            answers = []
            for swap in (to_b, to_missing):
                r = client.post("/graphql", json=substitute(op, swap))
                text = r.text
                for original in used:
                    text = text.replace(swap[original], f"<{names[original]}>")
                answers.append((r.status_code, json.loads(text)))
            assert answers[0] == answers[1], (op_name(op), op["variables"], answers)
            status, body = answers[1]
            assert status == 200, body
            assert not successes(body, found), f"a random id found something: {body}"
            replayed.add(op_name(op))
    return replayed


def op_name(op: dict[str, Any]) -> str:
    found = re.search(r"(?:query|mutation) (\w+)", op["query"])
    assert found, op["query"]
    return found.group(1)


def successes(body: dict[str, Any], found: set[str] = SUCCESSES) -> list[str]:
    """The answer's top-level fields that came back as what was asked for, not an error."""
    return [
        name
        for name, value in (body.get("data") or {}).items()
        if isinstance(value, dict) and value.get("__typename") in found
    ]
