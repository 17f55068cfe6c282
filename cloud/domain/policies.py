"""Policies: versioned documents the cloud owns, assigned to a tenant, a site or an agent.

A new version or a new assignment is appended to the sequence of every agent it reaches, so
an agent learns of it once, in order with its commands, and never on every poll.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from dockyard.cloud.store.models import Agent, Policy, PolicyAssignment, PolicyVersion, Site

from . import audit, modules, sequence
from .context import Ctx
from .errors import Conflict, Invalid, NotFound, Problem
from .pages import Page, PageRequest, keyset
from .permissions import Permission as P

TARGET_KINDS = ("tenant", "site", "agent")
MAX_DOCUMENT_BYTES = 64 * 1024


def validate(kind: str, document: dict[str, Any]) -> dict[str, Any]:
    """A document as its kind's model (a module's, `domain/modules.py`) dumps it."""
    known = modules.policy_models()
    model = known.get(kind)
    if model is None:
        raise Invalid(f"unknown policy kind {kind!r}; kinds are {', '.join(sorted(known))}")
    if len(repr(document)) > MAX_DOCUMENT_BYTES:
        raise Invalid("a policy document takes at most 64 KiB")
    try:
        return model.model_validate(document).model_dump(mode="json")
    except ValidationError as e:
        problems = tuple(
            Problem(".".join(str(p) for p in err["loc"]), _plain(err["msg"])) for err in e.errors()
        )
        said = "; ".join(f"{p.path or 'document'}: {p.message}" for p in problems)
        raise Invalid(f"invalid {kind} policy: {said}", problems) from None


def _plain(message: str) -> str:
    """Pydantic's message without the prefix its validators' own errors carry."""
    return message.removeprefix("Value error, ")


def create(
    ctx: Ctx, tenant_id: uuid.UUID, name: str, kind: str, document: dict[str, Any]
) -> Policy:
    ctx.principal.require(tenant_id, P.POLICY_WRITE)
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise Invalid("a policy name has 1 to 200 characters")
    clean = validate(kind, document)
    modules.check_policy(ctx, tenant_id, kind, clean)
    if ctx.session.scalar(select(Policy).where(Policy.tenant_id == tenant_id, Policy.name == name)):
        raise Conflict(f"a policy named {name!r} exists already")
    now = ctx.now()
    policy = Policy(tenant_id=tenant_id, name=name, kind=kind, current_version=1, created_at=now)
    ctx.session.add(policy)
    ctx.session.flush()
    ctx.session.add(
        PolicyVersion(
            tenant_id=tenant_id,
            policy_id=policy.id,
            version=1,
            document=clean,
            created_by=ctx.principal.id,
            created_at=now,
        )
    )
    audit.record(ctx, tenant_id, "policy.create", target=str(policy.id), kind=kind)
    return policy


def get(ctx: Ctx, policy_id: uuid.UUID) -> Policy:
    policy = ctx.session.get(Policy, policy_id)
    if policy is None:
        raise NotFound("policy")
    ctx.principal.require(policy.tenant_id, P.POLICY_READ, "policy")
    return policy


def current_document(ctx: Ctx, policy: Policy) -> dict[str, Any]:
    version = ctx.session.scalar(
        select(PolicyVersion).where(
            PolicyVersion.policy_id == policy.id, PolicyVersion.version == policy.current_version
        )
    )
    assert version is not None
    return version.document


def new_version(ctx: Ctx, policy_id: uuid.UUID, document: dict[str, Any]) -> PolicyVersion:
    policy = get(ctx, policy_id)
    ctx.principal.require(policy.tenant_id, P.POLICY_WRITE, "policy")
    clean = validate(policy.kind, document)
    modules.check_policy(ctx, policy.tenant_id, policy.kind, clean)
    policy.current_version += 1
    version = PolicyVersion(
        tenant_id=policy.tenant_id,
        policy_id=policy.id,
        version=policy.current_version,
        document=clean,
        created_by=ctx.principal.id,
        created_at=ctx.now(),
    )
    ctx.session.add(version)
    audit.record(
        ctx, policy.tenant_id, "policy.version", target=str(policy.id), version=version.version
    )
    for agent_id in _agents_reached(ctx, policy):
        _push(ctx, policy, agent_id, clean, assigned=True)
    return version


def listing(ctx: Ctx, tenant_id: uuid.UUID, request: PageRequest) -> Page[Policy]:
    """The tenant's policies by name."""
    ctx.principal.require(tenant_id, P.POLICY_READ)
    stmt = select(Policy).where(Policy.tenant_id == tenant_id)
    return keyset(ctx.session, stmt, Policy.name, request)


def versions(ctx: Ctx, policy_id: uuid.UUID, request: PageRequest) -> Page[PolicyVersion]:
    """A policy's versions, first to last."""
    policy = get(ctx, policy_id)
    stmt = select(PolicyVersion).where(PolicyVersion.policy_id == policy.id)
    return keyset(ctx.session, stmt, PolicyVersion.version, request)


def assignments(ctx: Ctx, policy_id: uuid.UUID, request: PageRequest) -> Page[PolicyAssignment]:
    """Where a policy is assigned, oldest assignment first."""
    policy = get(ctx, policy_id)
    stmt = select(PolicyAssignment).where(PolicyAssignment.policy_id == policy.id)
    return keyset(ctx.session, stmt, PolicyAssignment.created_at, request)


def assign(
    ctx: Ctx, policy_id: uuid.UUID, target_kind: str, target_id: uuid.UUID
) -> PolicyAssignment:
    policy = get(ctx, policy_id)
    ctx.principal.require(policy.tenant_id, P.POLICY_ASSIGN, "policy")
    if target_kind not in TARGET_KINDS:
        raise Invalid(f"a policy is assigned to one of: {', '.join(TARGET_KINDS)}")
    _check_target(ctx, policy.tenant_id, target_kind, target_id)
    exists = ctx.session.scalar(
        select(PolicyAssignment).where(
            PolicyAssignment.policy_id == policy_id,
            PolicyAssignment.target_kind == target_kind,
            PolicyAssignment.target_id == target_id,
        )
    )
    if exists is not None:
        return exists
    before = _agents_reached(ctx, policy)
    assignment = PolicyAssignment(
        tenant_id=policy.tenant_id,
        policy_id=policy_id,
        target_kind=target_kind,
        target_id=target_id,
        created_at=ctx.now(),
    )
    ctx.session.add(assignment)
    ctx.session.flush()
    audit.record(
        ctx,
        policy.tenant_id,
        "policy.assign",
        target=str(policy_id),
        to=f"{target_kind}:{target_id}",
    )
    document = current_document(ctx, policy)
    for agent_id in _agents_reached(ctx, policy) - before:
        _push(ctx, policy, agent_id, document, assigned=True)
    return assignment


def unassign(
    ctx: Ctx, policy_id: uuid.UUID, target_kind: str, target_id: uuid.UUID
) -> PolicyAssignment:
    """Ends an assignment; the agents it reached and no other assignment still reaches are
    told (`assigned: false`). Returns the assignment that was removed."""
    policy = get(ctx, policy_id)
    ctx.principal.require(policy.tenant_id, P.POLICY_ASSIGN, "policy")
    if target_kind not in TARGET_KINDS:
        raise Invalid(f"a policy is assigned to one of: {', '.join(TARGET_KINDS)}")
    assignment = ctx.session.scalar(
        select(PolicyAssignment).where(
            PolicyAssignment.policy_id == policy_id,
            PolicyAssignment.target_kind == target_kind,
            PolicyAssignment.target_id == target_id,
        )
    )
    if assignment is None:
        raise NotFound("policy assignment")
    before = _agents_reached(ctx, policy)
    ctx.session.delete(assignment)
    ctx.session.flush()
    audit.record(
        ctx,
        policy.tenant_id,
        "policy.unassign",
        target=str(policy_id),
        to=f"{target_kind}:{target_id}",
    )
    document = current_document(ctx, policy)
    for agent_id in before - _agents_reached(ctx, policy):
        _push(ctx, policy, agent_id, document, assigned=False)
    return assignment


def push_all_to_new_agent(ctx: Ctx, agent: Agent) -> None:
    """A freshly enrolled agent receives every policy that already reaches it."""
    targets = [("tenant", agent.tenant_id), ("site", agent.site_id), ("agent", agent.id)]
    seen: set[uuid.UUID] = set()
    for kind, target in targets:
        for policy in ctx.session.scalars(
            select(Policy)
            .join(PolicyAssignment, PolicyAssignment.policy_id == Policy.id)
            .where(PolicyAssignment.target_kind == kind, PolicyAssignment.target_id == target)
            .order_by(Policy.created_at)
        ):
            if policy.id not in seen:
                seen.add(policy.id)
                _push(ctx, policy, agent.id, current_document(ctx, policy), assigned=True)


def _agents_reached(ctx: Ctx, policy: Policy) -> set[uuid.UUID]:
    reached: set[uuid.UUID] = set()
    for assignment in ctx.session.scalars(
        select(PolicyAssignment).where(PolicyAssignment.policy_id == policy.id)
    ):
        query = select(Agent.id).where(Agent.revoked_at.is_(None))
        if assignment.target_kind == "tenant":
            query = query.where(Agent.tenant_id == assignment.target_id)
        elif assignment.target_kind == "site":
            query = query.where(Agent.site_id == assignment.target_id)
        else:
            query = query.where(Agent.id == assignment.target_id)
        reached.update(ctx.session.scalars(query))
    return reached


def _check_target(ctx: Ctx, tenant_id: uuid.UUID, kind: str, target_id: uuid.UUID) -> None:
    if kind == "tenant":
        if target_id != tenant_id:
            raise NotFound("tenant")
        return
    row: Site | Agent | None = (
        ctx.session.get(Site, target_id) if kind == "site" else ctx.session.get(Agent, target_id)
    )
    if row is None or row.tenant_id != tenant_id:
        raise NotFound(kind)


def _push(
    ctx: Ctx, policy: Policy, agent_id: uuid.UUID, document: dict[str, Any], *, assigned: bool
) -> None:
    payload = {
        "policy_id": str(policy.id),
        "policy_kind": policy.kind,
        "name": policy.name,
        "version": policy.current_version,
        "document": document,
        "assigned": assigned,
    }
    sequence.append(ctx, agent_id, policy.tenant_id, "policy", payload)
