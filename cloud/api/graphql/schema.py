"""Queries and mutations. Each resolver checks nothing itself: it calls the domain, which
checks the principal's role, inside the request's tenant-scoped session."""

import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar, cast

import strawberry
from graphql import GraphQLError
from graphql.validation import NoSchemaIntrospectionCustomRule
from sqlalchemy import Select, literal, select, tuple_
from strawberry.extensions import AddValidationRules, MaxAliasesLimiter, QueryDepthLimiter
from strawberry.permission import BasePermission
from strawberry.scalars import JSON
from strawberry.types import ExecutionContext, Info
from strawberry.utils.str_converters import to_camel_case

from dockyard.agent.protocol import FlowMode
from dockyard.cloud.domain import (
    agents,
    audit,
    commands,
    enrolment,
    jobs,
    policies,
    tenants,
    vm_notices,
    vms,
)
from dockyard.cloud.domain.context import Ctx
from dockyard.cloud.domain.errors import DomainError, Invalid, Refused
from dockyard.cloud.domain.permissions import Permission as P
from dockyard.cloud.store import models as m

from . import limits
from . import types as t
from .context import Context
from .extensions import MaskUnexpected, RequestSession, log_errors

R = TypeVar("R")
MAX_PAGE = 500

# --- permissions ---------------------------------------------------------------------------


class Authenticated(BasePermission):
    """A principal was resolved at the edge; what it may do is the domain's to check."""

    message = "unauthenticated: send Authorization: Bearer <API token>"

    def has_permission(self, source: Any, info: Info[Context, None], **kwargs: Any) -> bool:
        return info.context.principal is not None


AUTH: list[type[BasePermission]] = [Authenticated]


def query(resolver: Callable[..., Awaitable[R]]) -> R:
    """A field behind `Authenticated`. Strawberry types only its resolver-first form, so the
    decorator passes the resolver positionally and mypy keeps the field's type."""
    return cast(R, strawberry.field(resolver, permission_classes=AUTH))


NEEDS = "dockyard.needs"


def mutation(*needs: P) -> Callable[[Callable[..., Awaitable[R]]], R]:
    """A mutation behind `Authenticated` that declares the permissions it needs (the domain
    checks them; `build_schema` refuses a mutation that declares none, and the test of the
    permission table holds each mutation to what it declares)."""
    if not needs:
        raise TypeError("a mutation declares the permissions it needs")

    def decorate(resolver: Callable[..., Awaitable[R]]) -> R:
        return cast(
            R, strawberry.mutation(resolver, permission_classes=AUTH, metadata={NEEDS: needs})
        )

    return decorate


def mutation_needs() -> dict[str, tuple[P, ...]]:
    """Each mutation's GraphQL name and the permissions it declares."""
    definition = getattr(Mutation, "__strawberry_definition__")  # noqa: B009 - set by strawberry
    return {
        to_camel_case(f.python_name): tuple(f.metadata.get(NEEDS, ())) for f in definition.fields
    }


# --- plumbing ------------------------------------------------------------------------------


def _id(value: strawberry.ID | str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise Invalid(f"{what} is not a valid id") from None


def _flow(value: str) -> FlowMode:
    try:
        return FlowMode(value)
    except ValueError:
        raise Invalid("a flow mode is config, metadata or data") from None


async def call(
    info: Info[Context, None], fn: Callable[[Ctx], R], *, write: bool = False
) -> R | t.Problem:
    """Run `fn` in the request's session; expected errors become typed results."""
    context = info.context

    def work() -> R | t.Problem:
        try:
            value = fn(context.domain())
            if write:
                context.session.commit()
            return value
        except DomainError as e:
            context.session.rollback()
            if isinstance(e, Refused):
                # The refusal outlives the rolled-back request: a transaction of its own.
                audit.refused(context.domain(), e)
                context.session.commit()
            return t.as_problem(e)

    return await context.run(work)


async def plain(info: Info[Context, None], fn: Callable[[Ctx], R]) -> R:
    """For the few fields whose type has no error member: an expected error becomes a
    GraphQL error with its message (never a stack trace)."""
    value = await call(info, fn)
    if isinstance(value, t.Problem):
        raise GraphQLError(value.message)
    return value


def page(
    ctx: Ctx, stmt: Select[Any], order: Any, first: int, after: str | None, of: Callable[[Any], Any]
) -> t.Connection[Any]:
    if not 1 <= first <= MAX_PAGE:
        raise Invalid(f"first is between 1 and {MAX_PAGE}")
    entity = stmt.column_descriptions[0]["entity"]
    if after is not None:
        at, row_id = t.decode_cursor(after)
        stmt = stmt.where(tuple_(order, entity.id) > tuple_(literal(at), literal(row_id)))
    rows = ctx.session.scalars(stmt.order_by(order, entity.id).limit(first + 1)).all()
    edges = [
        t.Edge(cursor=t.encode_cursor(getattr(r, order.key), r.id), node=of(r))
        for r in rows[:first]
    ]
    return t.Connection(
        edges=edges,
        page_info=t.PageInfo(
            has_next_page=len(rows) > first, end_cursor=edges[-1].cursor if edges else None
        ),
    )


AgentPage = t.Connection[t.Agent]
CommandPage = t.Connection[t.Command]
JobPage = t.Connection[t.Job]
AuditPage = t.Connection[t.AuditRecord]


# --- queries -------------------------------------------------------------------------------


@strawberry.type
class Query:
    @query
    async def me(self, info: Info[Context, None]) -> t.Me:
        def fn(ctx: Ctx) -> t.Me:
            user = ctx.session.get(m.User, ctx.principal.id)
            assert user is not None
            return t.Me(
                id=strawberry.ID(str(user.id)),
                email=user.email,
                name=user.name,
                memberships=[
                    t.Membership(tenant_id=strawberry.ID(str(k)), role=v.value, via=via)
                    for via, grants in (
                        ("direct", ctx.principal.direct),
                        ("msp", ctx.principal.via_msp),
                    )
                    for k, v in sorted(grants.items())
                ],
            )

        return await plain(info, fn)

    @query
    async def tenants(self, info: Info[Context, None]) -> list[t.Tenant]:
        return await plain(info, lambda ctx: [t.Tenant.of(x) for x in tenants.list_visible(ctx)])

    @query
    async def tenant(self, info: Info[Context, None], id: strawberry.ID) -> t.TenantResult:
        return await call(info, lambda ctx: t.Tenant.of(tenants.get(ctx, _id(id, "id"))))

    @query
    async def sites(self, info: Info[Context, None], tenant_id: strawberry.ID) -> t.SitesResult:
        def fn(ctx: Ctx) -> t.SiteList:
            tid = _id(tenant_id, "tenantId")
            ctx.principal.require(tid, P.SITE_READ)
            rows = ctx.session.scalars(
                select(m.Site).where(m.Site.tenant_id == tid).order_by(m.Site.name)
            )
            return t.SiteList(items=[t.Site.of(r) for r in rows])

        return await call(info, fn)

    @query
    async def agents(
        self,
        info: Info[Context, None],
        tenant_id: strawberry.ID,
        first: int = 50,
        after: str | None = None,
        include_revoked: bool = False,
    ) -> t.AgentsResult:
        def fn(ctx: Ctx) -> AgentPage:
            tid = _id(tenant_id, "tenantId")
            ctx.principal.require(tid, P.AGENT_READ)
            stmt = select(m.Agent).where(m.Agent.tenant_id == tid)
            if not include_revoked:
                stmt = stmt.where(m.Agent.revoked_at.is_(None))
            return page(ctx, stmt, m.Agent.enrolled_at, first, after, t.Agent.of)

        return await call(info, fn)

    @query
    async def agent(self, info: Info[Context, None], id: strawberry.ID) -> t.AgentResult:
        return await call(info, lambda ctx: t.Agent.of(agents.get(ctx, _id(id, "id"))))

    @query
    async def enrolment_tokens(
        self, info: Info[Context, None], tenant_id: strawberry.ID
    ) -> t.EnrolmentTokensResult:
        def fn(ctx: Ctx) -> t.EnrolmentTokenList:
            tid = _id(tenant_id, "tenantId")
            ctx.principal.require(tid, P.ENROLMENT_READ)
            rows = ctx.session.scalars(
                select(m.EnrolmentToken)
                .where(m.EnrolmentToken.tenant_id == tid)
                .order_by(m.EnrolmentToken.created_at)
            )
            return t.EnrolmentTokenList(items=[t.EnrolmentToken.of(r) for r in rows])

        return await call(info, fn)

    @query
    async def policies(
        self, info: Info[Context, None], tenant_id: strawberry.ID
    ) -> t.PoliciesResult:
        def fn(ctx: Ctx) -> t.PolicyList:
            tid = _id(tenant_id, "tenantId")
            ctx.principal.require(tid, P.POLICY_READ)
            rows = ctx.session.scalars(
                select(m.Policy).where(m.Policy.tenant_id == tid).order_by(m.Policy.name)
            )
            return t.PolicyList(items=[t.Policy.of(r) for r in rows])

        return await call(info, fn)

    @query
    async def policy_versions(
        self, info: Info[Context, None], policy_id: strawberry.ID
    ) -> t.PolicyVersionsResult:
        return await call(
            info,
            lambda ctx: t.PolicyVersionList(
                items=[
                    t.PolicyVersion.of(v)
                    for v in policies.versions(ctx, _id(policy_id, "policyId"))
                ]
            ),
        )

    @query
    async def commands(
        self,
        info: Info[Context, None],
        agent_id: strawberry.ID,
        state: str | None = None,
        first: int = 50,
        after: str | None = None,
    ) -> t.CommandsResult:
        def fn(ctx: Ctx) -> CommandPage:
            agent = agents.get(ctx, _id(agent_id, "agentId"))
            stmt = select(m.Command).where(m.Command.agent_id == agent.id)
            if state is not None:
                stmt = stmt.where(m.Command.state == state)
            return page(ctx, stmt, m.Command.issued_at, first, after, t.Command.of)

        return await call(info, fn)

    @query
    async def command(self, info: Info[Context, None], id: strawberry.ID) -> t.CommandResult:
        return await call(info, lambda ctx: t.Command.of(commands.get(ctx, _id(id, "id"))))

    @query
    async def jobs(
        self,
        info: Info[Context, None],
        tenant_id: strawberry.ID,
        agent_id: strawberry.ID | None = None,
        first: int = 50,
        after: str | None = None,
    ) -> t.JobsResult:
        def fn(ctx: Ctx) -> JobPage:
            tid = _id(tenant_id, "tenantId")
            ctx.principal.require(tid, P.JOB_READ)
            stmt = select(m.Job).where(m.Job.tenant_id == tid)
            if agent_id is not None:
                stmt = stmt.where(m.Job.agent_id == _id(agent_id, "agentId"))
            return page(ctx, stmt, m.Job.created_at, first, after, t.Job.of)

        return await call(info, fn)

    @query
    async def job(self, info: Info[Context, None], id: strawberry.ID) -> t.JobResult:
        def fn(ctx: Ctx) -> t.JobDetail:
            job = jobs.get(ctx, _id(id, "id"))
            events = ctx.session.scalars(
                select(m.JobEvent)
                .where(m.JobEvent.job_id == job.id)
                .order_by(m.JobEvent.received_at, m.JobEvent.at)
            )
            return t.JobDetail(job=t.Job.of(job), events=[t.JobEvent.of(e) for e in events])

        return await call(info, fn)

    @query
    async def audit_log(
        self,
        info: Info[Context, None],
        tenant_id: strawberry.ID,
        first: int = 50,
        after: str | None = None,
    ) -> t.AuditLogResult:
        def fn(ctx: Ctx) -> AuditPage:
            tid = _id(tenant_id, "tenantId")
            ctx.principal.require(tid, P.AUDIT_READ)
            stmt = select(m.AuditRecord).where(m.AuditRecord.tenant_id == tid)
            return page(ctx, stmt, m.AuditRecord.at, first, after, t.AuditRecord.of)

        return await call(info, fn)

    @query
    async def vms(
        self,
        info: Info[Context, None],
        tenant_id: strawberry.ID,
        power_state: str | None = None,
        host: str | None = None,
        owner: str | None = None,
        idle_state: str | None = None,
        limit: int = 500,
    ) -> t.VmsResult:
        """The tenant's VM catalog; each filter matches any of a VM's sightings."""

        def fn(ctx: Ctx) -> t.VmList:
            entries = vms.catalog(
                ctx,
                _id(tenant_id, "tenantId"),
                power_state=power_state,
                host=host,
                owner=owner,
                idle_state=idle_state,
                limit=limit,
            )
            return t.VmList(
                items=[
                    t.Vm(
                        id=strawberry.ID(str(e.vm.id)),
                        name=e.vm.name,
                        conflict=e.vm.conflict,
                        sightings=[t.VmSighting.of(s, e.clones.get(s.id)) for s in e.sightings],
                    )
                    for e in entries
                ]
            )

        return await call(info, fn)

    @query
    async def vm_decisions(
        self,
        info: Info[Context, None],
        tenant_id: strawberry.ID,
        status: str | None = None,
        limit: int = 500,
    ) -> t.VmDecisionsResult:
        """Idle VMs proposed by docked agents, with their reasons, notices and answers."""

        def fn(ctx: Ctx) -> t.VmDecisionList:
            if not 1 <= limit <= 5000:
                raise Invalid("limit is between 1 and 5000")
            rows = vms.decisions(ctx, _id(tenant_id, "tenantId"), status, limit)
            return t.VmDecisionList(items=[t.VmDecision.of(r) for r in rows])

        return await call(info, fn)


# --- mutations -----------------------------------------------------------------------------


@strawberry.type
class Mutation:
    @mutation(P.TENANT_CHILD_CREATE)
    async def create_tenant(
        self,
        info: Info[Context, None],
        parent_id: strawberry.ID,
        name: str,
        flow_mode: str = "config",
        plan: str = "free",
    ) -> t.CreateTenantResult:
        return await call(
            info,
            lambda ctx: t.Tenant.of(
                tenants.create_child_tenant(
                    ctx, _id(parent_id, "parentId"), name, _flow(flow_mode), plan
                )
            ),
            write=True,
        )

    @mutation(P.TENANT_RENAME)
    async def rename_tenant(
        self, info: Info[Context, None], tenant_id: strawberry.ID, name: str
    ) -> t.RenameTenantResult:
        return await call(
            info,
            lambda ctx: t.Tenant.of(tenants.rename(ctx, _id(tenant_id, "tenantId"), name)),
            write=True,
        )

    @mutation(P.TENANT_ARCHIVE)
    async def archive_tenant(
        self, info: Info[Context, None], tenant_id: strawberry.ID
    ) -> t.ArchiveTenantResult:
        """Retire a child tenant: its agents are revoked and it takes no more changes."""
        return await call(
            info,
            lambda ctx: t.Tenant.of(tenants.archive(ctx, _id(tenant_id, "tenantId"))),
            write=True,
        )

    @mutation(P.TENANT_FLOW_NARROW, P.TENANT_FLOW_WIDEN)
    async def set_flow_mode(
        self, info: Info[Context, None], tenant_id: strawberry.ID, flow_mode: str
    ) -> t.SetFlowModeResult:
        return await call(
            info,
            lambda ctx: t.Tenant.of(
                tenants.set_flow_mode(ctx, _id(tenant_id, "tenantId"), _flow(flow_mode))
            ),
            write=True,
        )

    @mutation(P.TENANT_PLAN)
    async def set_plan(
        self, info: Info[Context, None], tenant_id: strawberry.ID, plan: str
    ) -> t.SetPlanResult:
        return await call(
            info,
            lambda ctx: t.Tenant.of(tenants.set_plan(ctx, _id(tenant_id, "tenantId"), plan)),
            write=True,
        )

    @mutation(P.SITE_WRITE)
    async def create_site(
        self,
        info: Info[Context, None],
        tenant_id: strawberry.ID,
        name: str,
        max_flow: str | None = None,
    ) -> t.CreateSiteResult:
        return await call(
            info,
            lambda ctx: t.Site.of(
                tenants.create_site(
                    ctx, _id(tenant_id, "tenantId"), name, _flow(max_flow) if max_flow else None
                )
            ),
            write=True,
        )

    @mutation(P.ENROLMENT_WRITE)
    async def create_enrolment_token(
        self,
        info: Info[Context, None],
        site_id: strawberry.ID,
        max_flow: str = "config",
        ttl_minutes: int = 60,
        note: str = "",
    ) -> t.CreateEnrolmentTokenResult:
        def fn(ctx: Ctx) -> t.EnrolmentTokenCreated:
            new = enrolment.create_token(
                ctx, _id(site_id, "siteId"), _flow(max_flow), timedelta(minutes=ttl_minutes), note
            )
            return t.EnrolmentTokenCreated(token=t.EnrolmentToken.of(new.token), secret=new.secret)

        return await call(info, fn, write=True)

    @mutation(P.ENROLMENT_WRITE)
    async def revoke_enrolment_token(
        self, info: Info[Context, None], id: strawberry.ID
    ) -> t.RevokeEnrolmentTokenResult:
        return await call(
            info,
            lambda ctx: t.EnrolmentToken.of(enrolment.revoke_token(ctx, _id(id, "id"))),
            write=True,
        )

    @mutation(P.AGENT_REVOKE)
    async def revoke_agent(
        self, info: Info[Context, None], id: strawberry.ID
    ) -> t.RevokeAgentResult:
        return await call(
            info, lambda ctx: t.Agent.of(agents.revoke(ctx, _id(id, "id"))), write=True
        )

    @mutation(P.POLICY_WRITE)
    async def create_policy(
        self,
        info: Info[Context, None],
        tenant_id: strawberry.ID,
        name: str,
        kind: str,
        document: JSON,
    ) -> t.CreatePolicyResult:
        def fn(ctx: Ctx) -> t.Policy:
            if not isinstance(document, dict):
                raise Invalid("a policy document is a JSON object")
            return t.Policy.of(
                policies.create(ctx, _id(tenant_id, "tenantId"), name, kind, document)
            )

        return await call(info, fn, write=True)

    @mutation(P.POLICY_WRITE)
    async def new_policy_version(
        self, info: Info[Context, None], policy_id: strawberry.ID, document: JSON
    ) -> t.NewPolicyVersionResult:
        def fn(ctx: Ctx) -> t.PolicyVersion:
            if not isinstance(document, dict):
                raise Invalid("a policy document is a JSON object")
            return t.PolicyVersion.of(
                policies.new_version(ctx, _id(policy_id, "policyId"), document)
            )

        return await call(info, fn, write=True)

    @mutation(P.POLICY_ASSIGN)
    async def assign_policy(
        self,
        info: Info[Context, None],
        policy_id: strawberry.ID,
        target_kind: str,
        target_id: strawberry.ID,
    ) -> t.AssignPolicyResult:
        def fn(ctx: Ctx) -> t.PolicyAssignment:
            a = policies.assign(
                ctx, _id(policy_id, "policyId"), target_kind, _id(target_id, "targetId")
            )
            return t.PolicyAssignment(
                id=strawberry.ID(str(a.id)),
                policy_id=strawberry.ID(str(a.policy_id)),
                target_kind=a.target_kind,
                target_id=strawberry.ID(str(a.target_id)),
            )

        return await call(info, fn, write=True)

    @mutation(P.COMMAND_ISSUE)
    async def issue_command(
        self,
        info: Info[Context, None],
        agent_id: strawberry.ID,
        name: str,
        args: JSON | None = None,
        ttl_seconds: int = 3600,
        timeout_seconds: int = 3600,
        idempotency_key: str | None = None,
    ) -> t.IssueCommandResult:
        def fn(ctx: Ctx) -> t.Command:
            if args is not None and not isinstance(args, dict):
                raise Invalid("command arguments are a JSON object")
            command = commands.issue(
                ctx,
                _id(agent_id, "agentId"),
                name,
                dict(args or {}),
                ttl=timedelta(seconds=ttl_seconds),
                timeout=timedelta(seconds=timeout_seconds),
                idempotency_key=idempotency_key,
            )
            return t.Command.of(command)

        return await call(info, fn, write=True)

    @mutation(P.COMMAND_ISSUE)
    async def issue_commands(
        self,
        info: Info[Context, None],
        agent_ids: list[strawberry.ID],
        name: str,
        args: JSON | None = None,
        ttl_seconds: int = 3600,
        timeout_seconds: int = 3600,
    ) -> t.IssueCommandsResult:
        """One command to each of many agents (at most 1000) in one transaction."""

        def fn(ctx: Ctx) -> t.CommandList:
            if args is not None and not isinstance(args, dict):
                raise Invalid("command arguments are a JSON object")
            issued = commands.issue_many(
                ctx,
                [_id(a, "agentIds") for a in agent_ids],
                name,
                dict(args or {}),
                ttl=timedelta(seconds=ttl_seconds),
                timeout=timedelta(seconds=timeout_seconds),
            )
            return t.CommandList(items=[t.Command.of(c) for c in issued])

        return await call(info, fn, write=True)

    @mutation(P.VM_POWER)
    async def power_vm(
        self, info: Info[Context, None], sighting_id: strawberry.ID, action: str
    ) -> t.PowerVmResult:
        """Shut down, power off, suspend or start a VM now, through the agent that sees it
        (its never-act list and the exclusion tag still apply there)."""
        return await call(
            info,
            lambda ctx: t.Command.of(vms.power(ctx, _id(sighting_id, "sightingId"), action)),
            write=True,
        )

    @mutation(P.VM_POWER)
    async def approve_vm_actions(
        self, info: Info[Context, None], agent_id: strawberry.ID, count: int
    ) -> t.ApproveVmActionsResult:
        """Let `count` more actions go past the agent's budget in this window; its held
        decisions go ahead, oldest first. The agent's own cap is not raised."""

        def fn(ctx: Ctx) -> t.VmApproval:
            command_id, released = vm_notices.approve(ctx, _id(agent_id, "agentId"), count)
            return t.VmApproval(command_id=strawberry.ID(str(command_id)), released=released)

        return await call(info, fn, write=True)

    @mutation(P.VM_SPLIT)
    async def split_vm_sighting(
        self, info: Info[Context, None], sighting_id: strawberry.ID
    ) -> t.SplitVmSightingResult:
        """Undo a merge: the sighting becomes a VM of its own and is never merged again."""
        return await call(
            info,
            lambda ctx: t.VmSighting.of(vms.split(ctx, _id(sighting_id, "sightingId"))),
            write=True,
        )


def build_schema(*, introspection: bool = True) -> strawberry.Schema:
    for cls in (Query, Mutation):
        definition = getattr(cls, "__strawberry_definition__")  # noqa: B009 - set by the decorator
        for f in definition.fields:
            if not f.permission_classes:
                raise RuntimeError(
                    f"{cls.__name__}.{f.name} has no permission class; refusing to start"
                )
            if cls is Mutation and not f.metadata.get(NEEDS):
                raise RuntimeError(f"mutation {f.name} declares no permission; refusing to start")
    # The limits' rule classes are made once: each limiter builds a new class when
    # constructed, and the validation cache is keyed by the rules, so limiters built per
    # request would never hit it. Parsing and validating took 4 ms of the event loop per
    # request, more than the database work of issuing a command (bench/poll_latency.py).
    rules = [
        *QueryDepthLimiter(max_depth=limits.MAX_DEPTH).validation_rules,
        *MaxAliasesLimiter(max_alias_count=limits.MAX_ALIASES).validation_rules,
        limits.FieldCountRule,
    ]
    if not introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    return DockyardSchema(
        query=Query,
        mutation=Mutation,
        extensions=[
            RequestSession,
            MaskUnexpected,
            lambda: AddValidationRules(rules),
            limits.OffLoopDocument,
        ],
    )


class DockyardSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        log_errors(errors)
