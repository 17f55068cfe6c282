"""Valid rows for tests, built through the domain as an operator would."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from dockyard.agent.protocol import FlowMode
from dockyard.cloud.domain import admin, enrolment, tenants
from dockyard.cloud.domain.clock import Clock, SystemClock
from dockyard.cloud.domain.context import Ctx
from dockyard.cloud.domain.principal import Principal, Role
from dockyard.cloud.store.db import Database


@dataclass
class World:
    """An MSP, a customer tenant under it, a site, an owner of both with an API token."""

    db: Database
    msp_id: uuid.UUID
    tenant_id: uuid.UUID
    site_id: uuid.UUID
    user_id: uuid.UUID
    token: str


@contextmanager
def system(db: Database, *tenant_ids: uuid.UUID, clock: Clock | None = None) -> Iterator[Ctx]:
    ids = frozenset(tenant_ids)
    with db.transaction(ids) as session:
        yield Ctx(session, Principal.system(ids), clock or SystemClock())


def make_world(
    db: Database,
    *,
    flow: FlowMode = FlowMode.METADATA,
    plan: str = "enterprise",
    clock: Clock | None = None,
) -> World:
    clock = clock or SystemClock()
    tag = uuid.uuid4().hex[:8]
    with db.transaction() as session:
        msp = admin.ensure_tenant(
            session, clock, f"MSP {tag}", kind="msp", flow_mode=flow, plan=plan
        )
        tenant = admin.ensure_tenant(
            session,
            clock,
            f"Tenant {tag}",
            kind="customer",
            flow_mode=flow,
            plan=plan,
            parent_id=msp.id,
        )
        user = admin.ensure_user(session, clock, f"owner-{tag}@example.com", f"Owner {tag}")
        admin.ensure_membership(session, clock, msp.id, user.id, Role.OWNER)
        admin.ensure_membership(session, clock, tenant.id, user.id, Role.OWNER)
        token = admin.issue_api_token(session, clock, user.id, "test")
        msp_id, tenant_id, user_id = msp.id, tenant.id, user.id
    with system(db, tenant_id, clock=clock) as ctx:
        site = tenants.create_site(ctx, tenant_id, "main", None)
        site_id = site.id
    return World(db, msp_id, tenant_id, site_id, user_id, token)


def enrolment_secret(
    world: World,
    *,
    max_flow: FlowMode = FlowMode.DATA,
    ttl: timedelta = timedelta(hours=1),
    clock: Clock | None = None,
) -> str:
    with system(world.db, world.tenant_id, clock=clock) as ctx:
        return enrolment.create_token(ctx, world.site_id, max_flow, ttl).secret


def enrol_agent(world: World, key_dir: Path, modules: tuple[str, ...] = ("noop",)) -> uuid.UUID:
    """An agent enrolled through the domain (no process): for tests that need its row."""
    from dockyard.agent import keys
    from dockyard.agent.protocol import EnrollRequest, HostFacts, ModuleInfo

    key = keys.generate(key_dir / f"{uuid.uuid4().hex}.key")
    request = EnrollRequest(
        token=enrolment_secret(world),
        public_key=keys.public_b64(key),
        host=HostFacts(hostname="h"),
        max_flow=FlowMode.DATA,
        modules=[ModuleInfo(name=m, version="1") for m in modules],
    )
    with world.db.transaction() as session:
        ctx = Ctx(session, Principal("anonymous", None), SystemClock())
        return enrolment.enroll(ctx, request).id


def add_user(db: Database, tenant_id: uuid.UUID, role: Role) -> tuple[uuid.UUID, str]:
    clock = SystemClock()
    with db.transaction() as session:
        user = admin.ensure_user(
            session, clock, f"{role.value}-{uuid.uuid4().hex[:8]}@example.com", "u"
        )
        admin.ensure_membership(session, clock, tenant_id, user.id, role)
        return user.id, admin.issue_api_token(session, clock, user.id, "test")


class Gql:
    """A GraphQL client with a bearer token; `data()` asserts there were no errors."""

    def __init__(self, url: str, token: str, verify: Any = True) -> None:
        self.url = f"{url}/graphql"
        self.http = httpx.Client(
            headers={"Authorization": f"Bearer {token}"}, verify=verify, timeout=60
        )

    def raw(self, query: str, **variables: Any) -> dict[str, Any]:
        response = self.http.post(self.url, json={"query": query, "variables": variables})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def data(self, query: str, **variables: Any) -> dict[str, Any]:
        body = self.raw(query, **variables)
        assert not body.get("errors"), body["errors"]
        data: dict[str, Any] = body["data"]
        return data

    def nodes(self, query: str, **variables: Any) -> list[dict[str, Any]]:
        """The nodes of the one connection `query` selects (its first page)."""
        (answer,) = self.data(query, **variables).values()
        return [e["node"] for e in answer["edges"]]


AUDIT_LOG = """query($t: ID!) { auditLog(tenantId: $t, first: 500) { __typename
  ... on AuditRecordConnection { edges { node { action actorId target outcome detail } } } } }"""


def audit_log(gql: Gql, tenant_id: uuid.UUID | str) -> list[dict[str, Any]]:
    """The tenant's audit records as `gql`'s principal reads them, oldest first."""
    log = gql.data(AUDIT_LOG, t=str(tenant_id))["auditLog"]
    assert log["__typename"] == "AuditRecordConnection", log
    return [e["node"] for e in log["edges"]]


def refusals(gql: Gql, tenant_id: uuid.UUID | str) -> list[tuple[str, str]]:
    """(permission, actor id) of each refused act in the tenant's audit log, oldest first."""
    return [
        (a["action"], a["actorId"]) for a in audit_log(gql, tenant_id) if a["outcome"] == "refused"
    ]


def answers_as_missing(
    gql: Gql, query: str, name: str, other_tenants_id: uuid.UUID | str, **variables: Any
) -> dict[str, Any]:
    """`query` with variable `name` set to another tenant's id, asserted to answer exactly
    as with an id that names nothing; returns that answer."""
    theirs = gql.raw(query, **{**variables, name: str(other_tenants_id)})
    missing = gql.raw(query, **{**variables, name: str(uuid.uuid4())})
    assert theirs == missing, (theirs, missing)
    return theirs
