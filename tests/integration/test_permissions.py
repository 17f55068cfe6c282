"""Every mutation x every role x (a direct grant, a grant through the MSP, both at once
with different roles), against the one permission table; refusals audited; the generated
docs/permissions.md current.

Mutations run in process (the schema with a real `Context`, on PostgreSQL): the grants, the
domain's checks and the audit are what is tested here, not HTTP. Each case targets the
child tenant of a fresh world (the MSP itself for `createTenant`) and puts back what an
allowed call changed, so every combination meets the same state."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from dockyard.agent.protocol import FlowMode
from dockyard.cloud.api.graphql.context import Context
from dockyard.cloud.api.graphql.permissions_doc import DOC_FILE, document
from dockyard.cloud.api.graphql.schema import build_schema, mutation_needs
from dockyard.cloud.app import build_services
from dockyard.cloud.domain import admin, enrolment, members, policies, tenants
from dockyard.cloud.domain.clock import SystemClock
from dockyard.cloud.domain.permissions import TABLE, Permission
from dockyard.cloud.domain.principal import Principal, Role
from dockyard.cloud.services import Services
from dockyard.cloud.settings import Settings
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import (
    Agent,
    ApiToken,
    AuditRecord,
    CatalogVm,
    EnrolmentToken,
    Membership,
    PolicyAssignment,
    Tenant,
    VmSighting,
)

from ..factories import World, enrol_agent, make_world, system

ROLES = list(Role)
# (role in the target tenant itself, role in its MSP): direct only, MSP only, both apart.
GRANTS: list[tuple[Role | None, Role | None]] = [
    *((r, None) for r in ROLES),
    *((None, r) for r in ROLES),
    *((d, m) for d, m in itertools.product(ROLES, ROLES) if d != m),
]
PROBLEMS = {
    "PermissionDenied",
    "TenantNotFound",
    "InvalidInput",
    "NameTaken",
    "TenantArchived",
    "AgentRevoked",
}


@dataclass
class Fixture:
    world: World
    agent_id: uuid.UUID
    policy_id: uuid.UUID
    token_id: uuid.UUID
    sighting_id: uuid.UUID
    vm_id: uuid.UUID
    member_id: uuid.UUID | None = None
    api_token_id: uuid.UUID | None = None


@dataclass(frozen=True)
class Case:
    """One mutation call: its arguments, the permission it needs with those arguments, the
    tenant that permission is checked in, and how to undo an allowed call."""

    mutation: str
    args: Callable[[Fixture, int], dict[str, Any]]
    needs: Permission
    on_msp: bool = False
    reset: Callable[[Fixture], None] | None = None


def _tid(f: Fixture) -> str:
    return str(f.world.tenant_id)


def _reset_flow(f: Fixture) -> None:
    with system(f.world.db, f.world.tenant_id) as ctx:
        tenants.get(ctx, f.world.tenant_id).flow_mode = "metadata"


def _reset_archive(f: Fixture) -> None:
    with system(f.world.db, f.world.tenant_id) as ctx:
        tenants.get(ctx, f.world.tenant_id).archived_at = None
        ctx.session.execute(update(Agent).values(revoked_at=None))
        ctx.session.execute(update(EnrolmentToken).values(revoked_at=None))


def _reset_agent(f: Fixture) -> None:
    with system(f.world.db, f.world.tenant_id) as ctx:
        ctx.session.execute(update(Agent).values(revoked_at=None))


def _reset_token(f: Fixture) -> None:
    with system(f.world.db, f.world.tenant_id) as ctx:
        ctx.session.execute(update(EnrolmentToken).values(revoked_at=None))


def _reset_assignment(f: Fixture) -> None:
    with system(f.world.db, f.world.tenant_id) as ctx:
        for row in ctx.session.scalars(
            select(PolicyAssignment).where(PolicyAssignment.target_kind == "tenant")
        ):
            ctx.session.delete(row)


def _reassign(f: Fixture) -> None:
    with system(f.world.db, f.world.tenant_id) as ctx:
        policies.assign(ctx, f.policy_id, "site", f.world.site_id)


def _reset_member(f: Fixture) -> None:
    """The fixture's member back as a viewer (after a role change or a removal)."""
    with system(f.world.db, f.world.tenant_id) as ctx:
        found = ctx.session.scalar(select(Membership).where(Membership.user_id == f.member_id))
        if found is None:
            ctx.session.add(
                Membership(
                    tenant_id=f.world.tenant_id,
                    user_id=f.member_id,
                    role="viewer",
                    created_at=datetime.now(UTC),
                )
            )
        else:
            found.role = "viewer"


def _reset_api_token(f: Fixture) -> None:
    with f.world.db.transaction() as session:
        session.execute(update(ApiToken).values(revoked_at=None))


def _reset_split(f: Fixture) -> None:
    with system(f.world.db, f.world.tenant_id) as ctx:
        ctx.session.get(VmSighting, f.sighting_id).pinned = False


CASES = [
    Case(
        "createTenant",
        lambda f, i: {"parentId": str(f.world.msp_id), "name": f"child {i}"},
        Permission.TENANT_CHILD_CREATE,
        on_msp=True,
    ),
    Case(
        "renameTenant",
        lambda f, i: {"tenantId": _tid(f), "name": f"renamed {i}"},
        Permission.TENANT_RENAME,
    ),
    Case(
        "archiveTenant",
        lambda f, i: {"tenantId": _tid(f)},
        Permission.TENANT_ARCHIVE,
        reset=_reset_archive,
    ),
    Case(
        "setFlowMode",
        lambda f, i: {"tenantId": _tid(f), "flowMode": "CONFIG"},
        Permission.TENANT_FLOW_NARROW,
        reset=_reset_flow,
    ),
    Case(
        "setFlowMode",
        lambda f, i: {"tenantId": _tid(f), "flowMode": "DATA"},
        Permission.TENANT_FLOW_WIDEN,
        reset=_reset_flow,
    ),
    Case("setPlan", lambda f, i: {"tenantId": _tid(f), "plan": "STANDARD"}, Permission.TENANT_PLAN),
    Case(
        "createSite",
        lambda f, i: {"tenantId": _tid(f), "name": f"site {i}"},
        Permission.SITE_WRITE,
    ),
    Case(
        "createEnrolmentToken",
        lambda f, i: {"siteId": str(f.world.site_id)},
        Permission.ENROLMENT_WRITE,
    ),
    Case(
        "revokeEnrolmentToken",
        lambda f, i: {"id": str(f.token_id)},
        Permission.ENROLMENT_WRITE,
        reset=_reset_token,
    ),
    Case(
        "revokeAgent",
        lambda f, i: {"id": str(f.agent_id)},
        Permission.AGENT_REVOKE,
        reset=_reset_agent,
    ),
    Case(
        "createPolicy",
        lambda f, i: {"tenantId": _tid(f), "name": f"p{i}", "kind": "noop", "document": {}},
        Permission.POLICY_WRITE,
    ),
    Case(
        "newPolicyVersion",
        lambda f, i: {"policyId": str(f.policy_id), "document": {}},
        Permission.POLICY_WRITE,
    ),
    Case(
        "assignPolicy",
        lambda f, i: {"policyId": str(f.policy_id), "targetKind": "TENANT", "targetId": _tid(f)},
        Permission.POLICY_ASSIGN,
        reset=_reset_assignment,
    ),
    Case(
        "unassignPolicy",
        lambda f, i: {
            "policyId": str(f.policy_id),
            "targetKind": "SITE",
            "targetId": str(f.world.site_id),
        },
        Permission.POLICY_ASSIGN,
        reset=_reassign,
    ),
    Case(
        "inviteMember",
        lambda f, i: {"tenantId": _tid(f), "email": f"i{i}@example.com", "role": "OPERATOR"},
        Permission.MEMBER_ADD,
    ),
    Case(
        "inviteMember",
        lambda f, i: {"tenantId": _tid(f), "email": f"o{i}@example.com", "role": "OWNER"},
        Permission.MEMBER_ADD_OWNER,
    ),
    Case(
        "changeMemberRole",
        lambda f, i: {"tenantId": _tid(f), "userId": str(f.member_id), "role": "ADMIN"},
        Permission.MEMBER_CHANGE,
        reset=_reset_member,
    ),
    Case(
        "changeMemberRole",
        lambda f, i: {"tenantId": _tid(f), "userId": str(f.member_id), "role": "OWNER"},
        Permission.MEMBER_CHANGE_OWNER,
        reset=_reset_member,
    ),
    Case(
        "removeMember",
        lambda f, i: {"tenantId": _tid(f), "userId": str(f.member_id)},
        Permission.MEMBER_CHANGE,
        reset=_reset_member,
    ),
    Case(
        "createApiToken",
        lambda f, i: {"tenantId": _tid(f), "name": f"t{i}"},
        Permission.API_TOKEN_WRITE,
    ),
    Case(
        "revokeApiToken",
        lambda f, i: {"id": str(f.api_token_id)},
        Permission.API_TOKEN_WRITE,
        reset=_reset_api_token,
    ),
    Case(
        "issueCommand",
        lambda f, i: {"agentId": str(f.agent_id), "name": "noop.echo"},
        Permission.COMMAND_ISSUE,
    ),
    Case(
        "issueCommands",
        lambda f, i: {"agentIds": [str(f.agent_id)], "name": "noop.echo"},
        Permission.COMMAND_ISSUE,
    ),
    Case(
        "powerVm",
        lambda f, i: {"sightingId": str(f.sighting_id), "action": "SHUTDOWN"},
        Permission.VM_POWER,
    ),
    Case(
        "approveVmActions",
        lambda f, i: {"agentId": str(f.agent_id), "count": 1},
        Permission.VM_POWER,
    ),
    # before the split, which moves the sighting off the fixture's VM (and drops that VM)
    Case("archiveVm", lambda f, i: {"vmId": str(f.vm_id)}, Permission.VM_POWER),
    Case("restoreVm", lambda f, i: {"vmId": str(f.vm_id)}, Permission.VM_POWER),
    Case(
        "splitVmSighting",
        lambda f, i: {"sightingId": str(f.sighting_id)},
        Permission.VM_SPLIT,
        reset=_reset_split,
    ),
]


def _fixture(pg: Database, tmp_path: Path) -> Fixture:
    world = make_world(pg)
    agent_id = enrol_agent(world, tmp_path, ("noop", "vm"))
    with system(pg, world.tenant_id) as ctx:
        policy = policies.create(ctx, world.tenant_id, "fixture", "noop", {})
        token = enrolment.create_token(
            ctx, world.site_id, FlowMode.CONFIG, ttl=timedelta(hours=1)
        ).token
        now = datetime.now(UTC)
        vm = CatalogVm(tenant_id=world.tenant_id, name="vm1", created_at=now, updated_at=now)
        ctx.session.add(vm)
        ctx.session.flush()
        sighting = VmSighting(
            tenant_id=world.tenant_id,
            agent_id=agent_id,
            endpoint="lab",
            native_id="vm1",
            vm_id=vm.id,
            name="vm1",
            power_state="on",
            idle_state="idle",
            identifiers={},
            record={},
            seen_at=now,
            life_state="off",
        )
        ctx.session.add(sighting)
        ctx.session.flush()
        policies.assign(ctx, policy.id, "site", world.site_id)
        member = members.invite(
            ctx, world.tenant_id, f"m-{uuid.uuid4().hex[:8]}@example.com", Role.VIEWER
        )
        fixture = Fixture(world, agent_id, policy.id, token.id, sighting.id, vm.id)
        fixture.member_id = member.user.id
    with pg.transaction() as session:  # a user's row, not the tenant's: no scope
        api_token = ApiToken(
            user_id=world.user_id,
            tenant_id=world.tenant_id,
            token_hash=uuid.uuid4().bytes * 2,
            name="fixture",
            created_at=datetime.now(UTC),
        )
        session.add(api_token)
        session.flush()
        fixture.api_token_id = api_token.id
    return fixture


def _principal(pg: Database, f: Fixture, direct: Role | None, msp: Role | None) -> Principal:
    clock = SystemClock()
    with pg.transaction() as session:
        user = admin.ensure_user(session, clock, f"u-{uuid.uuid4().hex[:10]}@example.com", "u")
        if direct is not None:
            admin.ensure_membership(session, clock, f.world.tenant_id, user.id, direct)
        if msp is not None:
            admin.ensure_membership(session, clock, f.world.msp_id, user.id, msp)
        return tenants.principal_for_user(session, user.id)


def _text(case: Case) -> str:
    types = {
        "parentId": "ID!",
        "tenantId": "ID!",
        "siteId": "ID!",
        "id": "ID!",
        "policyId": "ID!",
        "targetId": "ID!",
        "agentId": "ID!",
        "sightingId": "ID!",
        "vmId": "ID!",
        "userId": "ID!",
        "role": "Role!",
        "agentIds": "[ID!]!",
        "document": "JSON!",
        "count": "Int!",
        "flowMode": "FlowMode!",
        "plan": "Plan!",
        "targetKind": "PolicyTarget!",
        "action": "PowerAction!",
    }
    sample = case.args(_DUMMY, 0)
    decl = ", ".join(f"${k}: {types.get(k, 'String!')}" for k in sample)
    call = ", ".join(f"{k}: ${k}" for k in sample)
    return f"mutation({decl}) {{ r: {case.mutation}({call}) {{ __typename }} }}"


_DUMMY = Fixture(
    World(None, uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), ""),  # type: ignore[arg-type]
    uuid.uuid4(),
    uuid.uuid4(),
    uuid.uuid4(),
    uuid.uuid4(),
    uuid.uuid4(),
)


def expected(case: Case, direct: Role | None, msp: Role | None) -> bool:
    """What the table says for this grant: on the MSP itself its membership is direct."""
    rule = TABLE[case.needs]
    return rule.allows(msp, None) if case.on_msp else rule.allows(direct, msp)


@pytest.fixture(scope="module")
def svc(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Services:
    services = build_services(
        Settings(database_url=pg_url, data_dir=tmp_path_factory.mktemp("perm"), secret_key="x" * 40)
    )
    yield services
    services.db.dispose()


def test_every_mutation_is_walked_and_declares_what_it_needs() -> None:
    declared = mutation_needs()
    walked = {c.mutation for c in CASES}
    assert walked == set(declared), f"walk these mutations too: {set(declared) - walked}"
    for case in CASES:
        assert case.needs in declared[case.mutation], case


def test_every_mutation_for_every_grant_matches_the_table(
    pg: Database, svc: Services, tmp_path: Path
) -> None:
    schema = build_schema()
    fixture = _fixture(pg, tmp_path)
    principals = [_principal(pg, fixture, direct, msp) for direct, msp in GRANTS]
    mismatches = []
    refused: dict[uuid.UUID | None, list[str]] = {p.id: [] for p in principals}

    async def walk() -> int:
        calls = 0
        for case in CASES:
            for (direct, msp), principal in zip(GRANTS, principals, strict=True):
                result = await schema.execute(
                    _text(case),
                    variable_values=case.args(fixture, calls),
                    context_value=Context(svc, principal),
                )
                assert result.errors is None, (case, result.errors)
                got = result.data["r"]["__typename"]
                calls += 1
                if case.on_msp and msp is None:  # a child's member does not see its MSP
                    assert got == "TenantNotFound", (case, direct)
                    continue
                allowed = expected(case, direct, msp)
                if (allowed and got in PROBLEMS) or (not allowed and got != "PermissionDenied"):
                    mismatches.append((case.mutation, case.needs.value, direct, msp, got))
                elif allowed and case.reset is not None:
                    case.reset(fixture)
                elif not allowed:
                    refused[principal.id].append(case.needs.value)
        return calls

    calls = asyncio.run(walk())
    assert mismatches == [], mismatches
    assert calls == len(CASES) * len(GRANTS) == 28 * 20
    # Each refusal was written in a transaction of its own, outliving the rolled-back call.
    written = _refusals(pg, fixture)
    assert {k: sorted(v) for k, v in refused.items() if v} == written
    assert sum(map(len, refused.values())) > 100


def _refusals(pg: Database, fixture: Fixture) -> dict[uuid.UUID | None, list[str]]:
    """Refused acts by user, in the child tenant and its MSP."""
    found: dict[uuid.UUID | None, list[str]] = {}
    tenants_ = (fixture.world.tenant_id, fixture.world.msp_id)
    with system(pg, *tenants_) as ctx:
        for actor, action in ctx.session.execute(
            select(AuditRecord.actor_id, AuditRecord.action).where(
                AuditRecord.outcome == "refused", AuditRecord.actor_kind == "user"
            )
        ):
            found.setdefault(actor, []).append(action)
    return {k: sorted(v) for k, v in found.items()}


def test_the_escalation_of_an_msp_owner_with_a_viewer_seat_is_refused_and_audited(
    pg: Database, svc: Services, tmp_path: Path
) -> None:
    fixture = _fixture(pg, tmp_path)
    principal = _principal(pg, fixture, Role.VIEWER, Role.OWNER)
    assert principal.direct[fixture.world.tenant_id] is Role.VIEWER
    assert principal.via_msp[fixture.world.tenant_id] is Role.OWNER
    result = asyncio.run(
        build_schema().execute(
            "mutation($t: ID!) { setFlowMode(tenantId: $t, flowMode: DATA) "
            "{ __typename ... on PermissionDenied { message } } }",
            variable_values={"t": str(fixture.world.tenant_id)},
            context_value=Context(svc, principal),
        )
    )
    answer = result.data["setFlowMode"]
    assert answer["__typename"] == "PermissionDenied"
    assert "viewer here and owner through the MSP" in answer["message"]
    with system(pg, fixture.world.tenant_id) as ctx:
        assert ctx.session.get(Tenant, fixture.world.tenant_id).flow_mode == "metadata"
    assert _refusals(pg, fixture)[principal.id] == ["tenant:flow:widen"]


def test_docs_permissions_md_is_generated_from_the_code() -> None:
    assert DOC_FILE.read_text() == document(), (
        "the permissions changed: "
        "python -m dockyard.cloud.api.graphql.permissions_doc > docs/permissions.md"
    )
    for permission in Permission:
        assert f"`{permission.value}`" in DOC_FILE.read_text()


def test_a_mutation_without_a_declared_permission_refuses_to_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dockyard.cloud.api.graphql import schema as s

    with pytest.raises(TypeError):
        s.mutation()
    field = next(f for f in s.Mutation.__strawberry_definition__.fields if f.name == "set_plan")
    monkeypatch.setattr(field, "metadata", {})
    with pytest.raises(RuntimeError, match="set_plan declares no permission"):
        s.build_schema()
