"""The reads the portal's Policies, Jobs and Audit pages added to the API, over HTTP against
the real cloud on PostgreSQL: a refused policy document names each problem at its path; a
policy and its assignments read by id (another tenant's ids answer as missing ones); the
audit log filtered by action prefix, outcome and actor, newest first; jobs newest first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import update

from dockyard.cloud.domain import commands
from dockyard.cloud.domain.principal import Role
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import Job

from ..factories import Gql, add_user, answers_as_missing, enrol_agent, make_world, system
from ..procs import Cloud

CREATE = """mutation($t: ID!, $k: String!) { createPolicy(tenantId: $t, name: "p", kind: $k,
  document: {}) { __typename ... on Policy { id } } }"""
VERSION = """mutation($p: ID!, $d: JSON!) { newPolicyVersion(policyId: $p, document: $d) {
  __typename ... on PolicyVersion { version } ... on InvalidInput { message problems { path
  message } } } }"""
ASSIGN = """mutation($p: ID!, $k: PolicyTarget!, $id: ID!) { assignPolicy(policyId: $p,
  targetKind: $k, targetId: $id) { __typename } }"""
POLICY = """query($p: ID!) { policy(id: $p) { __typename ... on Policy { id name kind
  currentVersion } ... on Error { message } } policyAssignments(policyId: $p) { __typename
  ... on PolicyAssignmentConnection { edges { node { targetKind targetId } } }
  ... on Error { message } } }"""
AUDIT = """query($t: ID!, $a: String, $o: String, $k: ActorKind, $n: Boolean!) {
  auditLog(tenantId: $t, first: 500, action: $a, outcome: $o, actorKind: $k, newestFirst: $n)
  { __typename ... on AuditRecordConnection { edges { node { action outcome actorKind } } } } }"""
JOBS = """query($t: ID!, $n: Boolean!) { jobs(tenantId: $t, newestFirst: $n) { __typename
  ... on JobConnection { edges { node { id } } } } }"""


def test_a_refused_policy_document_names_each_problem_at_its_path(
    cloud: Cloud, pg: Database
) -> None:
    world = make_world(pg)
    _, token = add_user(pg, world.tenant_id, Role.ADMIN)
    gql = Gql(cloud.url, token)
    made = gql.data(CREATE, t=str(world.tenant_id), k="vm-lifecycle")["createPolicy"]
    bad = {"idle_days": 0, "signals": ["cpu", "smell"], "archive": {"min_vm_gb": 5, "max_vm_gb": 2}}
    answer = gql.data(VERSION, p=made["id"], d=bad)["newPolicyVersion"]
    assert answer["__typename"] == "InvalidInput"
    paths = {p["path"]: p["message"] for p in answer["problems"]}
    assert set(paths) == {"idle_days", "signals.1", "archive"}, paths
    assert "greater than or equal to 1" in paths["idle_days"]
    # A validator's own sentence, without pydantic's "Value error, " prefix.
    assert paths["archive"] == "min_vm_gb is not below max_vm_gb: no VM would qualify"
    # The message still says it all for a client that reads only the message.
    assert "idle_days:" in answer["message"]
    assert "signals.1:" in answer["message"]
    # A problem of the whole document has the empty path.
    whole = gql.data(VERSION, p=made["id"], d={"idle_days": 1, "notice_hours": 48})
    problems = whole["newPolicyVersion"]["problems"]
    assert [p["path"] for p in problems] == [""], problems
    # Nothing was kept: the policy is still at version 1.
    assert gql.data(POLICY, p=made["id"])["policy"]["currentVersion"] == 1


def test_a_policy_and_where_it_is_assigned_read_by_id(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    world, other = make_world(pg), make_world(pg)
    agent_id = enrol_agent(world, tmp_path)
    _, token = add_user(pg, world.tenant_id, Role.VIEWER)
    admin = Gql(cloud.url, add_user(pg, world.tenant_id, Role.ADMIN)[1])
    viewer = Gql(cloud.url, token)
    policy = admin.data(CREATE, t=str(world.tenant_id), k="noop")["createPolicy"]["id"]
    for kind, target in (("SITE", world.site_id), ("AGENT", agent_id)):
        admin.data(ASSIGN, p=policy, k=kind, id=str(target))
    got = viewer.data(POLICY, p=policy)
    assert got["policy"] == {
        "__typename": "Policy",
        "id": policy,
        "name": "p",
        "kind": "noop",
        "currentVersion": 1,
    }
    assert [e["node"] for e in got["policyAssignments"]["edges"]] == [
        {"targetKind": "SITE", "targetId": str(world.site_id)},
        {"targetKind": "AGENT", "targetId": str(agent_id)},
    ]
    theirs = Gql(cloud.url, other.token)
    missing = answers_as_missing(theirs, POLICY, "p", policy)
    assert missing["data"]["policy"]["__typename"] == "PolicyNotFound"
    assert missing["data"]["policyAssignments"]["__typename"] == "PolicyNotFound"


def _audit(gql: Gql, tenant: str, **filters: object) -> list[dict[str, str]]:
    newest = bool(filters.pop("newest", False))
    answer = gql.data(AUDIT, t=tenant, n=newest, **filters)["auditLog"]
    assert answer["__typename"] == "AuditRecordConnection", answer
    return [e["node"] for e in answer["edges"]]


def test_the_audit_log_filters_by_action_outcome_and_actor_newest_first(
    cloud: Cloud, pg: Database
) -> None:
    world = make_world(pg)
    admin = Gql(cloud.url, add_user(pg, world.tenant_id, Role.ADMIN)[1])
    viewer = Gql(cloud.url, add_user(pg, world.tenant_id, Role.VIEWER)[1])
    tenant = str(world.tenant_id)
    policy = admin.data(CREATE, t=tenant, k="noop")["createPolicy"]["id"]
    admin.data(VERSION, p=policy, d={"greeting": "hi"})
    refused = viewer.data(CREATE, t=tenant, k="noop")["createPolicy"]
    assert refused["__typename"] == "PermissionDenied"

    everything = _audit(admin, tenant)
    assert [r["action"] for r in _audit(admin, tenant, a="policy.")] == [
        "policy.create",
        "policy.version",
    ]
    assert [r["action"] for r in _audit(admin, tenant, a="policy.", newest=True)] == [
        "policy.version",
        "policy.create",
    ]
    assert [(r["action"], r["outcome"]) for r in _audit(admin, tenant, o="refused")] == [
        ("policy:write", "refused")
    ]
    users = _audit(admin, tenant, k="USER")
    assert users == [r for r in everything if r["actorKind"] == "USER"]
    assert len(users) == 3  # the two policy acts and the refusal
    # A prefix is matched literally: `%` and `_` are no wildcards.
    assert _audit(admin, tenant, a="%") == []
    assert _audit(admin, tenant, a="policy_") == []
    # No filter set is the whole log, as before.
    assert len(_audit(admin, tenant, a=None, o=None, k=None)) == len(everything)


def test_jobs_newest_first(cloud: Cloud, pg: Database, tmp_path: Path) -> None:
    world = make_world(pg)
    agent_id = enrol_agent(world, tmp_path)
    jobs = []
    for n in range(3):  # one transaction each: each its own creation time
        with system(pg, world.tenant_id) as ctx:
            jobs.append(commands.issue(ctx, agent_id, "noop.echo", {"n": n}).job_id)
    gql = Gql(cloud.url, world.token)
    oldest = [
        e["node"]["id"] for e in gql.data(JOBS, t=str(world.tenant_id), n=False)["jobs"]["edges"]
    ]
    newest = [
        e["node"]["id"] for e in gql.data(JOBS, t=str(world.tenant_id), n=True)["jobs"]["edges"]
    ]
    assert oldest == [str(j) for j in jobs]
    assert newest == oldest[::-1]


SERIES = """query($t: ID!, $d: Int!) { dashboard(tenantId: $t) { __typename
  ... on Dashboard { jobsByDay(days: $d) { day succeeded failed } } ... on Error { message } } }"""


def test_the_dashboard_series_of_finished_jobs(cloud: Cloud, pg: Database, tmp_path: Path) -> None:
    world, other = make_world(pg), make_world(pg)
    agent_id = enrol_agent(world, tmp_path)
    with system(pg, world.tenant_id) as ctx:
        done = commands.issue(ctx, agent_id, "noop.echo", {}).job_id
        ctx.session.execute(update(Job).where(Job.id == done).values(state="succeeded"))
    viewer = Gql(cloud.url, add_user(pg, world.tenant_id, Role.VIEWER)[1])
    days = viewer.data(SERIES, t=str(world.tenant_id), d=7)["dashboard"]["jobsByDay"]
    today = datetime.now(UTC).date()
    assert [d["day"] for d in days] == [str(today - timedelta(days=6 - n)) for n in range(7)]
    assert days[-1] == {"day": str(today), "succeeded": 1, "failed": 0}
    assert sum(d["succeeded"] + d["failed"] for d in days) == 1
    refused = viewer.raw(SERIES, t=str(world.tenant_id), d=400)
    assert refused["errors"][0]["message"] == "days is between 1 and 90"
    theirs = answers_as_missing(Gql(cloud.url, other.token), SERIES, "t", world.tenant_id, d=7)
    assert theirs["data"]["dashboard"]["__typename"] == "TenantNotFound"


HISTORY = """query($t: ID!, $d: Int!) { dashboard(tenantId: $t) { __typename ... on Dashboard {
  agents { online quiet } vms { byState { state count } storedBytes }
  history(days: $d) { days series { name values } } } ... on Error { message } } }"""


def test_the_dashboard_history_over_graphql(cloud: Cloud, pg: Database, tmp_path: Path) -> None:
    """The charts' series through the API, as a viewer reads them: each day of the window,
    today's point the same as the cards, the days the cloud took no sample null; bad windows
    refused with a sentence, another tenant's history answered as a missing tenant."""
    world, other = make_world(pg), make_world(pg)
    enrol_agent(world, tmp_path)
    viewer = Gql(cloud.url, add_user(pg, world.tenant_id, Role.VIEWER)[1])
    board = viewer.data(HISTORY, t=str(world.tenant_id), d=3)["dashboard"]
    today = datetime.now(UTC).date()
    assert board["history"]["days"] == [str(today - timedelta(days=2 - n)) for n in range(3)]
    series = {s["name"]: s["values"] for s in board["history"]["series"]}
    assert series["agents.quiet"][-1] == board["agents"]["quiet"] == 1
    assert series["agents.online"][-1] == board["agents"]["online"] == 0
    assert series["vms.stored_bytes"][-1] == board["vms"]["storedBytes"]
    for s in board["vms"]["byState"]:
        assert series[f"vms.{s['state'].lower()}"][-1] == s["count"]
    assert all(values[:2] == [None, None] for values in series.values())  # never sampled
    refused = viewer.raw(HISTORY, t=str(world.tenant_id), d=0)
    assert refused["errors"][0]["message"] == "days is between 1 and 90"
    theirs = answers_as_missing(Gql(cloud.url, other.token), HISTORY, "t", world.tenant_id, d=3)
    assert theirs["data"]["dashboard"]["__typename"] == "TenantNotFound"
