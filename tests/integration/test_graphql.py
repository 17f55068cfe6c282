"""GraphQL: the committed SDL, no leaks across tenants, bounded SQL for long lists."""

from __future__ import annotations

import asyncio
import json
import random
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from dockyard.cloud.api.graphql.context import Context
from dockyard.cloud.api.graphql.schema import build_schema
from dockyard.cloud.api.graphql.sdl import SDL_FILE, sdl
from dockyard.cloud.app import build_services
from dockyard.cloud.domain import commands, policies, tenants
from dockyard.cloud.domain.clock import SystemClock
from dockyard.cloud.settings import Settings
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import Agent, AuditRecord, Command, Policy, Site

from ..factories import Gql, World, add_user, enrolment_secret, make_world, system
from ..procs import Agent as AgentProc
from ..procs import Cloud

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def test_committed_sdl_is_current() -> None:
    assert SDL_FILE.read_text() == sdl(), (
        "the schema changed: python -m dockyard.cloud.api.graphql.sdl > cloud/api/graphql/schema.graphql"
    )


ALLOWED_LISTS = {
    ("Me", "memberships"),  # one per grant: few, and all of them make the answer
    ("Agent", "modules"),
    ("Agent", "possibleDuplicateOf"),
    ("Vm", "sightings"),  # one per agent that sees the VM
    ("VmSighting", "possibleCloneOf"),
    ("VmDecision", "reasons"),
    ("ModuleInfo", "standaloneFeatures"),
    ("IssuedCommands", "commands"),  # what the mutation just made, whole
    ("VmDashboard", "byState"),  # one per life state: a closed, short set
    ("InvalidInput", "problems"),  # one per problem in the document just sent
    ("Dashboard", "jobsByDay"),  # one per day asked for, at most 90
    ("FigureHistory", "days"),  # likewise
    ("FigureHistory", "series"),  # one per figure the parts give: a short, fixed set
    ("FigureSeries", "values"),  # one per day
    ("VmIdleness", "reasons"),  # the agent's few sentences
    ("VmIdleness", "thresholds"),  # one per signal
    ("VmIdleness", "days"),  # one per judged day, at most 120
    ("VmActivityDay", "figures"),  # one per signal
}


def test_lists_are_connections_and_each_field_names_its_errors() -> None:
    """Every list a query answers is a connection walked by first/after; every query and
    mutation but `me` answers a union of one result and errors that implement Error."""
    from graphql import (
        GraphQLEnumType,
        GraphQLList,
        GraphQLObjectType,
        GraphQLUnionType,
        get_named_type,
        get_nullable_type,
    )

    schema = build_schema()._schema
    for root in (schema.query_type, schema.mutation_type):
        assert root is not None
        for name, f in root.fields.items():
            kind = get_nullable_type(f.type)
            if name == "me":
                continue
            assert isinstance(kind, GraphQLUnionType), name
            result, *errors = kind.types
            assert errors, name
            assert all("Error" in {i.name for i in e.interfaces} for e in errors), name
            assert "InvalidInput" in {e.name for e in errors}, name
            if root is schema.query_type and result.name.endswith("Connection"):
                assert {"first", "after"} <= set(f.args), name
    for t in schema.type_map.values():
        if not isinstance(t, GraphQLObjectType) or t.name.startswith("__"):
            continue
        for name, f in t.fields.items():
            if isinstance(get_nullable_type(f.type), GraphQLList) and name != "edges":
                assert (t.name, name) in ALLOWED_LISTS, f"{t.name}.{name} is a list"
    enums = {t.name for t in schema.type_map.values() if isinstance(t, GraphQLEnumType)}
    closed = {"FlowMode", "Role", "TenantKind", "Plan", "PolicyTarget", "CommandState"}
    closed |= {"JobState", "PowerAction", "IdleState", "DecisionStatus", "ActorKind"}
    assert closed <= enums
    for type_name, field_name in (
        ("Tenant", "flowMode"),
        ("Command", "state"),
        ("Job", "state"),
        ("PolicyAssignment", "targetKind"),
        ("VmDecision", "status"),
    ):
        field = schema.type_map[type_name].fields[field_name]  # type: ignore[union-attr]
        assert isinstance(get_named_type(field.type), GraphQLEnumType), (type_name, field_name)


def test_a_connection_is_walked_with_its_cursor(cloud: Cloud, pg: Database) -> None:
    world = make_world(pg)
    with system(pg, world.tenant_id) as ctx:
        for i in range(4):
            tenants.create_site(ctx, world.tenant_id, f"s{i}", None)
    gql = Gql(cloud.url, world.token)
    query = """query($t: ID!, $after: String) { sites(tenantId: $t, first: 2, after: $after) {
      __typename ... on SiteConnection { edges { cursor node { name } }
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor } }
      ... on InvalidInput { message } } }"""
    names, after, pages_read = [], None, 0
    while True:
        page = gql.data(query, t=str(world.tenant_id), after=after)["sites"]
        pages_read += 1
        names += [e["node"]["name"] for e in page["edges"]]
        info = page["pageInfo"]
        assert info["hasPreviousPage"] is (after is not None)
        assert info["startCursor"] == page["edges"][0]["cursor"]
        if not info["hasNextPage"]:
            break
        after = info["endCursor"]
    assert (names, pages_read) == (["main", "s0", "s1", "s2", "s3"], 3)
    bad = gql.data(query, t=str(world.tenant_id), after="garbage")["sites"]
    assert bad == {
        "__typename": "InvalidInput",
        "message": "that cursor is not one this API gave out",
    }


def test_every_field_requires_authentication(cloud: Cloud) -> None:
    import httpx

    r = httpx.post(f"{cloud.url}/graphql", json={"query": "{ tenants { id } }"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    body = r.json()
    assert body["data"] is None
    assert "unauthenticated" in body["errors"][0]["message"]


INTROSPECT = """{ __schema {
  queryType { fields { name args { name type { kind name ofType { kind name ofType { kind name } } } } type { ...T } } }
  mutationType { fields { name args { name type { kind name ofType { kind name ofType { kind name } } } } type { ...T } } }
  types { kind name fields { name args { name } type { ...T } } possibleTypes { name }
    enumValues { name } }
} }
fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }"""


def _named(t: dict[str, Any]) -> dict[str, Any]:
    while t.get("ofType"):
        t = t["ofType"]
    return t


def selection(types: dict[str, Any], name: str, depth: int = 0) -> str:
    t = types[name]
    if t["kind"] in ("SCALAR", "ENUM"):
        return ""
    if t["kind"] == "UNION":
        return (
            "{ __typename "
            + " ".join(
                f"... on {m['name']} {selection(types, m['name'], depth + 1)}"
                for m in t["possibleTypes"]
            )
            + " }"
        )
    parts = ["__typename"]
    for f in t["fields"]:
        if f["args"]:
            continue
        inner = _named(f["type"])
        if types[inner["name"]]["kind"] in ("SCALAR", "ENUM"):
            parts.append(f["name"])
        elif depth < 3:
            parts.append(f"{f['name']} {selection(types, inner['name'], depth + 1)}")
    return "{ " + " ".join(parts) + " }"


def argument(
    arg: dict[str, Any], types: dict[str, Any], victim_ids: list[str], rng: random.Random
) -> Any:
    base = _named(arg["type"])["name"]
    if base in types and types[base]["kind"] == "ENUM":
        return rng.choice([v["name"] for v in types[base]["enumValues"]])
    if base == "ID":
        return rng.choice(victim_ids)
    if base == "Int":
        return rng.choice([1, 10, 60])
    if base == "Boolean":
        return rng.choice([True, False])
    if base == "JSON":
        return {}
    if arg["name"] == "kind":
        return "noop"
    if arg["name"] == "name" and base == "String":
        return rng.choice(["noop.echo", "leak-probe"])
    return None


def victim(pg: Database, cloud: Cloud, tmp_path: Path) -> tuple[World, set[str]]:
    world = make_world(pg)
    AgentProc(tmp_path / "victim-agent").dock(cloud.url, enrolment_secret(world))
    with system(pg, world.tenant_id) as ctx:
        agent = ctx.session.scalars(select(Agent)).one()
        command = commands.issue(ctx, agent.id, "noop.echo", {"secret": "victim-args"})
        policy = policies.create(ctx, world.tenant_id, "victim-policy", "noop", {})
        site = tenants.create_site(ctx, world.tenant_id, "victim-site", None)
        ids = {
            str(x)
            for x in (
                world.tenant_id,
                world.msp_id,
                world.site_id,
                agent.id,
                command.id,
                command.job_id,
                policy.id,
                site.id,
                world.user_id,
            )
        }
    return world, ids


def snapshot(pg: Database, world: World) -> tuple[int, ...]:
    with system(pg, world.tenant_id, world.msp_id) as ctx:
        counts = tuple(
            len(ctx.session.scalars(select(model)).all())
            for model in (AuditRecord, Command, Policy, Site, Agent)
        )
        revoked = sum(1 for a in ctx.session.scalars(select(Agent)) if a.revoked_at is not None)
        tenant = tenants.get(ctx, world.tenant_id)
        return (*counts, revoked, hash((tenant.flow_mode, tenant.plan)))


def test_no_query_or_mutation_leaks_another_tenants_data(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    attacker = make_world(pg)
    target, victim_ids = victim(pg, cloud, tmp_path)
    before = snapshot(pg, target)
    gql = Gql(cloud.url, attacker.token)
    schema = gql.data(INTROSPECT)["__schema"]
    types = {t["name"]: t for t in schema["types"]}
    fields = [("query", f) for f in schema["queryType"]["fields"]]
    fields += [("mutation", f) for f in schema["mutationType"]["fields"]]
    assert len(fields) >= 25
    rng = random.Random(20261125)
    probed = 0
    for _round in range(3):
        for op, f in fields:
            values = {a["name"]: argument(a, types, sorted(victim_ids), rng) for a in f["args"]}
            values = {k: v for k, v in values.items() if v is not None}
            if any(_named(a["type"])["name"] == "ID" for a in f["args"]) is False and op == "query":
                pass  # still probed: lists must show only the attacker's own rows
            decl = ", ".join(
                f"${a['name']}: {_type_ref(a['type'])}" for a in f["args"] if a["name"] in values
            )
            call = ", ".join(f"{k}: ${k}" for k in values)
            text = (
                f"{op}{'(' + decl + ')' if decl else ''} "
                f"{{ {f['name']}{'(' + call + ')' if call else ''} {selection(types, _named(f['type'])['name'])} }}"
            )
            body = gql.raw(text, **values)
            seen = set(UUID.findall(json.dumps(body))) - {
                v for v in values.values() if isinstance(v, str)
            }
            leaked = seen & victim_ids
            assert not leaked, f"{f['name']} leaked {leaked}: {body}"
            assert "victim" not in json.dumps(body.get("data") or {}), f"{f['name']}: {body}"
            probed += 1
    assert probed == 3 * len(fields)
    assert snapshot(pg, target) == before, "a mutation with another tenant's ids changed its data"


def _type_ref(t: dict[str, Any]) -> str:
    if t["kind"] == "NON_NULL":
        return _type_ref(t["ofType"]) + "!"
    if t["kind"] == "LIST":
        return "[" + _type_ref(t["ofType"]) + "]"
    return str(t["name"])


def test_msp_manages_children_and_widening_needs_the_childs_owner(
    cloud: Cloud, pg: Database
) -> None:
    world = make_world(pg)
    msp_admin_id, msp_admin_token = add_user(
        pg,
        world.msp_id,
        __import__("dockyard.cloud.domain.principal", fromlist=["Role"]).Role.ADMIN,
    )
    gql = Gql(cloud.url, msp_admin_token)
    listed = {
        e["node"]["id"]
        for e in gql.data("{ tenants { ... on TenantConnection { edges { node { id } } } } }")[
            "tenants"
        ]["edges"]
    }
    assert {str(world.msp_id), str(world.tenant_id)} <= listed
    narrowed = gql.data(
        """mutation($t: ID!) { setFlowMode(tenantId: $t, flowMode: CONFIG) {
        __typename ... on Tenant { flowMode } } }""",
        t=str(world.tenant_id),
    )["setFlowMode"]
    assert narrowed == {"__typename": "Tenant", "flowMode": "CONFIG"}
    widened = gql.data(
        """mutation($t: ID!) { setFlowMode(tenantId: $t, flowMode: DATA) {
        __typename ... on PermissionDenied { message } } }""",
        t=str(world.tenant_id),
    )["setFlowMode"]
    assert widened["__typename"] == "PermissionDenied"
    owner = Gql(cloud.url, world.token)  # a direct owner of the child tenant
    assert (
        owner.data(
            """mutation($t: ID!) { setFlowMode(tenantId: $t, flowMode: DATA) {
        __typename } }""",
            t=str(world.tenant_id),
        )["setFlowMode"]["__typename"]
        == "Tenant"
    )
    audit = owner.data(
        """query($t: ID!) { auditLog(tenantId: $t, first: 50) { ... on AuditRecordConnection {
        edges { node { action actorId detail } } } } }""",
        t=str(world.msp_id),
    )
    flows = [
        e["node"] for e in audit["auditLog"]["edges"] if e["node"]["action"] == "tenant.flow_mode"
    ]
    assert any(n["actorId"] == str(msp_admin_id) for n in flows)


def test_listing_many_agents_takes_a_bounded_number_of_statements(
    pg_url: str, pg: Database, tmp_path: Path
) -> None:
    world = make_world(pg)
    now = SystemClock().now()
    with system(pg, world.tenant_id) as ctx:
        sites = [tenants.create_site(ctx, world.tenant_id, f"site-{i}", None) for i in range(10)]
        for i in range(1000):
            ctx.session.add(
                Agent(
                    tenant_id=world.tenant_id,
                    site_id=sites[i % 10].id,
                    name=f"agent-{i}",
                    public_key="A" * 43,
                    host_facts={},
                    modules=[],
                    max_flow="config",
                    possible_duplicate_of=[],
                    enrolled_at=now,
                    last_seq=0,
                    acked_seq=0,
                )
            )
    svc = build_services(Settings(database_url=pg_url, data_dir=tmp_path, secret_key="x" * 40))
    schema = build_schema()
    with svc.db.session() as session:
        principal = tenants.principal_for_user(session, world.user_id)
    counts = {}
    query = """query($t: ID!, $n: Int!, $after: String) { agents(tenantId: $t, first: $n, after: $after) {
        ... on AgentConnection { edges { node { id name site { name } tenant { name } } }
        pageInfo { hasNextPage endCursor } } } }"""
    for n in (10, 500):
        statements: list[str] = []

        def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement)

        event.listen(svc.db.engine, "before_cursor_execute", count)
        seen = 0
        after = None
        while True:
            result = asyncio.run(
                schema.execute(
                    query,
                    variable_values={"t": str(world.tenant_id), "n": n, "after": after},
                    context_value=Context(svc, principal),
                )
            )
            assert result.errors is None, result.errors
            page = result.data["agents"]
            seen += len(page["edges"])
            assert all(e["node"]["site"]["name"].startswith("site-") for e in page["edges"])
            if not page["pageInfo"]["hasNextPage"] or n == 10:
                break
            after = page["pageInfo"]["endCursor"]
        event.remove(svc.db.engine, "before_cursor_execute", count)
        counts[n] = (len(statements), seen)
    svc.db.dispose()
    assert counts[500][1] == 1000  # two pages of 500 walked every agent
    per_page_10 = counts[10][0]
    assert per_page_10 <= 6, counts
    assert counts[500][0] <= 2 * per_page_10, f"statements grew with the page size: {counts}"


@pytest.mark.parametrize(
    "bad", ['{ agents(tenantId: "nope") { __typename ... on InvalidInput { message } } }']
)
def test_expected_errors_are_typed_results(cloud: Cloud, pg: Database, bad: str) -> None:
    world = make_world(pg)
    result = Gql(cloud.url, world.token).data(bad)
    assert result["agents"]["__typename"] == "InvalidInput"
    assert "not a valid id" in result["agents"]["message"]
    missing = Gql(cloud.url, world.token).data(
        "query($i: ID!) { agent(id: $i) { __typename ... on AgentNotFound { message } } }",
        i=str(uuid.uuid4()),
    )
    assert missing["agent"] == {"__typename": "AgentNotFound", "message": "agent not found"}
