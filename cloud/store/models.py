"""The tables of the control plane.

Every row a tenant owns inherits `TenantOwned`, which gives it a `tenant_id` column; the
session scoping in `tenancy.py` filters every ORM read and write of such a class by the
current principal's tenants. Users and their API tokens are global: a person may belong to
several tenants.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

from .types import UTCDateTime


class Base(DeclarativeBase):
    type_annotation_map = {
        datetime: UTCDateTime(),
        uuid.UUID: Uuid(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


def new_id() -> uuid.UUID:
    return uuid.uuid4()


class TenantOwned:
    """Mixin: the row belongs to one tenant, and only that tenant's principals see it."""

    @declared_attr
    def tenant_id(cls) -> Mapped[uuid.UUID]:
        return mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)


class Tenant(Base):
    """A customer organisation; an MSP tenant is the parent of its customers."""

    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))  # "msp" or "customer"
    flow_mode: Mapped[str] = mapped_column(String(16))
    plan: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]
    archived_at: Mapped[datetime | None]
    """Set when its MSP archived it: its agents are revoked and it takes no more changes."""


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    # Who the user is at the company's OpenID provider: set at the first sign-in, when an
    # invited user (a row with no subject yet) is bound by its verified e-mail address.
    oidc_issuer: Mapped[str | None] = mapped_column(String(500))
    oidc_subject: Mapped[str | None] = mapped_column(String(255))
    # A local password (scrypt, `cloud/auth/passwords.py`), for the embedded default only.
    password_hash: Mapped[str | None] = mapped_column(String(300))

    __table_args__ = (
        UniqueConstraint("oidc_issuer", "oidc_subject", name="uq_users_oidc_identity"),
    )


class UserSession(Base):
    """A signed-in browser: only the SHA-256 of its `dockyard_session` cookie is kept, with
    the CSRF token its cookie-authenticated POSTs must echo. Ended rows stay until purged."""

    __tablename__ = "user_sessions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]


class ApiToken(Base):
    """A user's bearer token; only its SHA-256 is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    """Past it the token is refused at the edge; None: it never expires (bootstrap's)."""
    last_used_at: Mapped[datetime | None]
    """Written at most once a minute per token (`admin.USE_GRANULARITY`)."""
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    """The tenant a token made in the portal is limited to (its user's grants there, and
    through it in its children when it is an MSP); None: every membership of its user.
    Not `TenantOwned`: a token is resolved before any tenant is known."""


class Membership(TenantOwned, Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("tenant_id", "user_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]


class Site(TenantOwned, Base):
    __tablename__ = "sites"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    max_flow: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime]


class EnrolmentToken(TenantOwned, Base):
    __tablename__ = "enrolment_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    site_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"))
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    max_flow: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(String(200), default="")
    created_by: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    used_by_agent_id: Mapped[uuid.UUID | None]
    revoked_at: Mapped[datetime | None]


class Agent(TenantOwned, Base):
    __tablename__ = "agents"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    site_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("sites.id"))
    name: Mapped[str] = mapped_column(String(255))
    public_key: Mapped[str] = mapped_column(String(64))
    host_facts: Mapped[dict[str, Any]]
    modules: Mapped[list[Any]]
    max_flow: Mapped[str] = mapped_column(String(16))
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    acked_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    possible_duplicate_of: Mapped[list[Any]]
    enrolled_at: Mapped[datetime]
    key_rotated_at: Mapped[datetime | None]
    last_seen_at: Mapped[datetime | None]
    clock_skew_s: Mapped[int | None] = mapped_column(Integer)
    """How far the agent's clock ran ahead of the cloud's (negative: behind) when it last
    reported, measured by the agent from the cloud's `Dockyard-Time`."""
    revoked_at: Mapped[datetime | None]


class UsedAssertion(TenantOwned, Base):
    """A client assertion's `jti`, kept until the assertion would have expired anyway."""

    __tablename__ = "used_assertions"

    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    agent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    expires_at: Mapped[datetime] = mapped_column(index=True)


class Policy(TenantOwned, Base):
    __tablename__ = "policies"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))
    current_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime]


class PolicyVersion(TenantOwned, Base):
    __tablename__ = "policy_versions"
    __table_args__ = (UniqueConstraint("policy_id", "version"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    policy_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("policies.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    document: Mapped[dict[str, Any]]
    created_by: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime]


class PolicyAssignment(TenantOwned, Base):
    """A policy applies to a whole tenant, a site, or one agent."""

    __tablename__ = "policy_assignments"
    __table_args__ = (UniqueConstraint("policy_id", "target_kind", "target_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    policy_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("policies.id", ondelete="CASCADE"))
    target_kind: Mapped[str] = mapped_column(String(16))
    target_id: Mapped[uuid.UUID]
    created_at: Mapped[datetime]


class AgentEntry(TenantOwned, Base):
    """One entry of an agent's ordered sequence: a command, a policy or a feature change."""

    __tablename__ = "agent_entries"
    __table_args__ = (UniqueConstraint("agent_id", "seq"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    agent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))
    command_id: Mapped[uuid.UUID | None]
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class Command(TenantOwned, Base):
    __tablename__ = "commands"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key"),
        Index("ix_commands_open", "state", "expires_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    agent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    job_id: Mapped[uuid.UUID]
    seq: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(64))
    args: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16))
    idempotency_key: Mapped[str | None] = mapped_column(String(128))
    issued_by: Mapped[uuid.UUID | None]
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    timeout_s: Mapped[int] = mapped_column(Integer)
    sent_at: Mapped[datetime | None]
    result_due_at: Mapped[datetime | None]
    acked_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    result_code: Mapped[str | None] = mapped_column(String(64))


class Job(TenantOwned, Base):
    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    agent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    command_id: Mapped[uuid.UUID | None]
    kind: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    progress: Mapped[float | None] = mapped_column(Float)
    result_code: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class JobEvent(TenantOwned, Base):
    __tablename__ = "job_events"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime]
    progress: Mapped[float | None] = mapped_column(Float)
    code: Mapped[str | None] = mapped_column(String(64))
    counts: Mapped[dict[str, Any]]
    detail: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime]


class MetadataBatch(TenantOwned, Base):
    """An upward batch of inventory or catalog records; append-only, idempotent by batch id."""

    __tablename__ = "metadata_batches"
    __table_args__ = (UniqueConstraint("tenant_id", "batch_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    batch_id: Mapped[uuid.UUID]
    agent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    module: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(64))
    record_count: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    records: Mapped[list[Any]]
    received_at: Mapped[datetime]


class CatalogVm(TenantOwned, Base):
    """One VM of the tenant's catalog: the sightings of it by one or more agents, merged.

    For display and reports only; a command always addresses a sighting's (agent, endpoint,
    native id)."""

    __tablename__ = "catalog_vms"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    conflict: Mapped[str | None] = mapped_column(Text)
    """Set when a sighting matched this VM and another one: shown, never resolved silently."""
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class VmSighting(TenantOwned, Base):
    """What one agent last reported of one VM on one of its endpoints."""

    __tablename__ = "vm_sightings"
    __table_args__ = (UniqueConstraint("tenant_id", "agent_id", "endpoint", "native_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    agent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    endpoint: Mapped[str] = mapped_column(String(64))
    native_id: Mapped[str] = mapped_column(String(200))
    vm_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("catalog_vms.id", ondelete="CASCADE"), index=True
    )
    pinned: Mapped[bool] = mapped_column(default=False)
    """A person split this sighting off its VM: it is never merged automatically again."""
    name: Mapped[str] = mapped_column(String(200))
    power_state: Mapped[str] = mapped_column(String(16))
    host: Mapped[str | None] = mapped_column(String(200))
    owner: Mapped[str | None] = mapped_column(String(320))
    idle_state: Mapped[str] = mapped_column(String(16))
    last_active_at: Mapped[datetime | None]
    identifiers: Mapped[dict[str, Any]]
    record: Mapped[dict[str, Any]]
    seen_at: Mapped[datetime]
    life_state: Mapped[str] = mapped_column(String(16), default="running")
    life_reason: Mapped[str | None] = mapped_column(String(500))
    life_since: Mapped[datetime | None]
    """When `life_state` became what it is (the first sighting saying so); null for rows
    older than migration 0008 until their state next changes."""
    archived_at: Mapped[datetime | None]
    archive_snapshot: Mapped[str | None] = mapped_column(String(200))
    archive_repository: Mapped[str | None] = mapped_column(String(500))
    size_before: Mapped[int | None] = mapped_column(BigInteger)
    stored_bytes: Mapped[int | None] = mapped_column(BigInteger)
    restore_count: Mapped[int | None] = mapped_column(Integer)
    restored_at: Mapped[datetime | None]


class VmRestoreMail(TenantOwned, Base):
    """The mail a `vm.restore` command's end sends its requester, marked once it is sent."""

    __tablename__ = "vm_restore_mails"

    command_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("commands.id", ondelete="CASCADE"), primary_key=True
    )
    requested_by: Mapped[str] = mapped_column(String(320))
    vm_name: Mapped[str] = mapped_column(String(200))
    sent_at: Mapped[datetime | None]


class VmDecision(TenantOwned, Base):
    """An agent's proposal to act on an idle VM, and what the cloud did with it: the notice
    it sent, the answer, and the command it issued after the notice period."""

    __tablename__ = "vm_decisions"
    __table_args__ = (
        UniqueConstraint("tenant_id", "agent_id", "decision_id"),
        Index("ix_vm_decisions_open", "status", "due_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    agent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    decision_id: Mapped[str] = mapped_column(String(64))
    endpoint: Mapped[str] = mapped_column(String(64))
    native_id: Mapped[str] = mapped_column(String(200))
    vm_name: Mapped[str | None] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16))
    action: Mapped[str | None] = mapped_column(String(16))
    owner: Mapped[str | None] = mapped_column(String(320))
    reasons: Mapped[list[Any]]
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    notice_hours: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))
    """proposed, notified, skipped, delayed, commanded; then done (the agent's result),
    held (the agent's budget is spent, until an approval), or failed (no one to notify, the
    mail, or the agent's refusal: `error` says which)."""
    received_at: Mapped[datetime]
    notice_sent_at: Mapped[datetime | None]
    due_at: Mapped[datetime | None]
    answer: Mapped[str | None] = mapped_column(String(16))
    answered_at: Mapped[datetime | None]
    command_id: Mapped[uuid.UUID | None]
    error: Mapped[str | None] = mapped_column(Text)


class UsedNoticeLink(TenantOwned, Base):
    """Nonces of answered notice links: each link works once."""

    __tablename__ = "used_notice_links"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    used_at: Mapped[datetime]


class FigureSample(TenantOwned, Base):
    """One of a tenant's dashboard figures on one UTC day: the last value the history timer
    took that day (`domain/history.py`)."""

    __tablename__ = "figure_samples"
    __table_args__ = (UniqueConstraint("tenant_id", "day", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    day: Mapped[date]
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    taken_at: Mapped[datetime]


class AuditRecord(TenantOwned, Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_tenant_at", "tenant_id", "at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    at: Mapped[datetime]
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[uuid.UUID | None]
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(200))
    outcome: Mapped[str] = mapped_column(String(16), default="ok")
    detail: Mapped[dict[str, Any]]


__all__ = [
    "Agent",
    "AgentEntry",
    "ApiToken",
    "AuditRecord",
    "Base",
    "CatalogVm",
    "Command",
    "EnrolmentToken",
    "FigureSample",
    "Job",
    "JobEvent",
    "Membership",
    "MetadataBatch",
    "Policy",
    "PolicyAssignment",
    "PolicyVersion",
    "Site",
    "Tenant",
    "TenantOwned",
    "UsedAssertion",
    "UsedNoticeLink",
    "User",
    "VmDecision",
    "VmSighting",
]
