"""Live: subscriptions over WebSocket (graphql-transport-ws, `live_app.py`), fed by the bus.

The bus says only that a tenant's job or agent changed (`domain/live.py`), and wakes only
the subscriptions that listen to that tenant; each reads the row again through the domain
with the socket's principal, so it is shown what a query would show it. Before it
sends anything a subscription resolves the socket's credential again: a revoked token or
an ended session sends nothing more and closes the socket (`live_context.py`); with nothing
to send, that check still runs every `DOCKYARD_LIVE_RECHECK_S` (30 s)."""

import uuid
from collections.abc import AsyncGenerator
from enum import Enum
from functools import partial
from typing import Annotated, Any, cast

import strawberry
from graphql import GraphQLError
from strawberry.types import Info

from dockyard.cloud.domain import errors as e
from dockyard.cloud.domain import jobs, live, states
from dockyard.cloud.domain.permissions import Permission as P

from .agents import Agent
from .commands import Job
from .context import Context
from .errors import MATCHES, InvalidInput, JobNotFound, PermissionDenied, TenantNotFound, members
from .fields import AUTH, parse_id
from .live_context import LiveContext


@strawberry.enum
class LiveChangeKind(Enum):
    AGENT = "agent"
    JOB = "job"
    RESYNC = "resync"


@strawberry.type(
    description="Something in the tenant changed: an agent (enrolled, revoked, renamed) or a"
    " job (created, progressed, finished), as you may see it now. RESYNC comes first, and again"
    " whenever changes may have been missed: read again what you show."
)
class TenantChange:
    kind: LiveChangeKind
    tenant_id: strawberry.ID
    agent: Agent | None = None
    job: Job | None = None


TenantChangesResult = Annotated[
    TenantChange | TenantNotFound | PermissionDenied | InvalidInput,
    strawberry.union("TenantChangesResult"),
]
JobProgressResult = Annotated[
    Job | JobNotFound | PermissionDenied | InvalidInput, strawberry.union("JobProgressResult")
]


def _expected(result: Any, err: e.DomainError) -> Any:
    """The member of `result` that names `err`, as `errors.Expected` maps a query's."""
    for member in members(result):
        if MATCHES[member](err):
            return member(message=err.message)
    raise GraphQLError(err.message) from None


def _live(info: Info[Context, None]) -> LiveContext:
    if not isinstance(info.context, LiveContext):
        raise GraphQLError(
            "subscriptions are served over WebSocket (graphql-transport-ws) at /graphql"
        )
    return info.context


def _require_agents(tenant_id: uuid.UUID) -> Any:
    def check(ctx: Any) -> None:
        ctx.principal.require(tenant_id, P.AGENT_READ)
        ctx.principal.require(tenant_id, P.JOB_READ)

    return check


async def tenant_changes(
    info: Info[Context, None], tenant_id: strawberry.ID
) -> AsyncGenerator[TenantChangesResult, None]:
    """The tenant's agents and jobs as they change, on any replica."""
    ctx = _live(info)
    try:
        tid = parse_id(tenant_id, "tenantId")
        await ctx.read(_require_agents(tid))
    except e.DomainError as err:
        yield _expected(TenantChangesResult, err)
        return
    with ctx.svc.bus.live({tid}) as listener:
        yield TenantChange(kind=LiveChangeKind.RESYNC, tenant_id=tenant_id)
        while True:
            changes, lost = await listener.next(ctx.svc.settings.live_recheck_s)
            if listener.closed or not await ctx.still_signed_in():
                return
            if lost:
                yield TenantChange(kind=LiveChangeKind.RESYNC, tenant_id=tenant_id)
            for change in sorted(changes, key=lambda c: (c.kind.value, c.id)):
                if change.kind is live.Kind.AGENT:
                    agent = await ctx.read(partial(live.agent, agent_id=change.id))
                    if agent is not None:
                        yield TenantChange(
                            kind=LiveChangeKind.AGENT, tenant_id=tenant_id, agent=Agent.of(agent)
                        )
                else:
                    job = await ctx.read(partial(live.job, job_id=change.id))
                    if job is not None:
                        yield TenantChange(
                            kind=LiveChangeKind.JOB, tenant_id=tenant_id, job=Job.of(job)
                        )


async def job_progress(
    info: Info[Context, None], job_id: strawberry.ID
) -> AsyncGenerator[JobProgressResult, None]:
    """The job now, then again at each change (its progress, its state), until it ends."""
    ctx = _live(info)
    assert ctx.principal is not None
    # The principal's tenants: the job's is not known before it is read, and a change
    # must not slip between that read and listening.
    with ctx.svc.bus.live(ctx.principal.tenant_ids) as listener:
        try:
            jid = parse_id(job_id, "jobId")
            row = await ctx.read(lambda c: jobs.get(c, jid))
        except e.DomainError as err:
            yield _expected(JobProgressResult, err)
            return
        while True:
            yield Job.of(row)
            if row.state in states.JOB_FINAL:
                return
            while True:
                changes, lost = await listener.next(ctx.svc.settings.live_recheck_s)
                if listener.closed or not await ctx.still_signed_in():
                    return
                if lost or any(c.kind is live.Kind.JOB and c.id == jid for c in changes):
                    break
            try:
                row = await ctx.read(lambda c: jobs.get(c, jid))
            except e.DomainError as err:
                yield _expected(JobProgressResult, err)
                return


@strawberry.type
class LiveSubscription:
    # Strawberry types a field by its resolver's result: an async generator here.
    tenant_changes: TenantChangesResult = cast(Any, strawberry.subscription)(
        resolver=tenant_changes,
        permission_classes=AUTH,
        description="The tenant's agents and jobs as they change, on any replica: RESYNC"
        " first, then each change as you may see it now.",
    )
    job_progress: JobProgressResult = cast(Any, strawberry.subscription)(
        resolver=job_progress,
        permission_classes=AUTH,
        description="The job now, then at each change of its progress or state, until it"
        " ends. Another tenant's job answers as a missing one.",
    )
