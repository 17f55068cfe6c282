"""The dashboard: a tenant's figures at a glance. The core gives agents and jobs; each
module's GraphQL part may add a `Dashboard` class whose fields are merged in (the VM module
adds `vms`). Each field is its own aggregate read, run only when asked for."""

from typing import Annotated

import strawberry
from graphql import GraphQLError
from strawberry.types import Info

from dockyard.cloud.domain import dashboard, history
from dockyard.cloud.domain.errors import Invalid

from .context import Context
from .errors import InvalidInput, PermissionDenied, TenantNotFound
from .fields import parse_id, query
from .module_parts import module_parts


@strawberry.type(description="The tenant's agents by how recently they were heard from.")
class AgentCounts:
    online: int = strawberry.field(description="Heard from within the last 10 minutes.")
    quiet: int = strawberry.field(
        description="Not revoked, but silent for longer (or never heard from since docking)."
    )
    revoked: int


@strawberry.type(
    description="The tenant's jobs: open ones now, finished ones in the last 24 hours."
)
class JobCounts:
    pending: int
    running: int
    succeeded_last_24h: int
    failed_last_24h: int = strawberry.field(
        description="Failed, timed out, rejected or expired in the last 24 hours."
    )


@strawberry.type(description="Finished jobs on one UTC day.")
class JobDay:
    day: str = strawberry.field(description="The UTC day, `YYYY-MM-DD`.")
    succeeded: int
    failed: int = strawberry.field(description="Failed, timed out, rejected or expired.")


@strawberry.type(description="One dashboard figure, a value for each day of the history.")
class FigureSeries:
    name: str = strawberry.field(
        description="`part.figure`: `agents.online`, `agents.quiet`, `jobs.pending`, "
        "`jobs.running`, and each module's (`vms.running` and each VM life state, "
        "`vms.stored_bytes`, `vms.saved_bytes`, `vms.vcpus_reclaimed`, ...)."
    )
    values: list[float | None] = strawberry.field(
        description="One for each of `FigureHistory.days`, oldest first: the day's last "
        "sample, today's read now; null where the day has no sample (never a guessed zero)."
    )


@strawberry.type(description="The dashboard's figures over the last days.")
class FigureHistory:
    days: list[str] = strawberry.field(description="UTC days, `YYYY-MM-DD`, oldest first.")
    series: list[FigureSeries] = strawberry.field(
        description="Every figure the caller may read, each part's in its own order."
    )


def _sentence(err: Invalid) -> GraphQLError:
    # A field inside the result has no union to answer in: the sentence as an error.
    return GraphQLError(err.message)


@strawberry.type
class CoreDashboard:
    tenant_id: strawberry.ID

    @strawberry.field
    async def agents(self, info: Info[Context, None]) -> AgentCounts:
        tid = parse_id(self.tenant_id, "tenantId")
        n = await info.context.read(lambda ctx: dashboard.agents(ctx, tid))
        return AgentCounts(online=n.online, quiet=n.quiet, revoked=n.revoked)

    @strawberry.field
    async def jobs(self, info: Info[Context, None]) -> JobCounts:
        tid = parse_id(self.tenant_id, "tenantId")
        n = await info.context.read(lambda ctx: dashboard.jobs(ctx, tid))
        return JobCounts(
            pending=n.pending,
            running=n.running,
            succeeded_last_24h=n.succeeded_recently,
            failed_last_24h=n.failed_recently,
        )

    async def _jobs_by_day(self, info: Info[Context, None], days: int = 14) -> list[JobDay]:
        tid = parse_id(self.tenant_id, "tenantId")
        try:
            found = await info.context.read(lambda ctx: dashboard.jobs_by_day(ctx, tid, days))
        except Invalid as err:
            raise _sentence(err) from None
        return [
            JobDay(day=d.day.isoformat(), succeeded=d.succeeded, failed=d.failed) for d in found
        ]

    # Resolver-first, which strawberry types, since the field carries a description.
    jobs_by_day = strawberry.field(
        _jobs_by_day,
        description="Finished jobs per UTC day, by the day they finished, oldest first: the "
        f"last `days` days with today (1 to {dashboard.MAX_DAYS}), each present.",
    )

    async def _history(self, info: Info[Context, None], days: int = 14) -> FigureHistory:
        tid = parse_id(self.tenant_id, "tenantId")
        try:
            found = await info.context.read(lambda ctx: history.history(ctx, tid, days))
        except Invalid as err:
            raise _sentence(err) from None
        return FigureHistory(
            days=[d.isoformat() for d in found.days],
            series=[FigureSeries(name=s.name, values=s.values) for s in found.series],
        )

    history = strawberry.field(
        _history,
        description="The figures over the last `days` UTC days with today (1 to "
        f"{dashboard.MAX_DAYS}), from a sample the cloud takes of each every "
        "`DOCKYARD_HISTORY_INTERVAL_S` (a day keeps its last).",
    )


Dashboard = strawberry.type(
    type("Dashboard", (CoreDashboard, *module_parts("Dashboard")), {}),
    description="A tenant's figures at a glance; each field is read only when asked for.",
)

DashboardResult = Annotated[
    Dashboard | TenantNotFound | PermissionDenied | InvalidInput,  # type: ignore[valid-type]
    strawberry.union("DashboardResult"),
]


@strawberry.type
class DashboardQuery:
    @query(DashboardResult)
    async def dashboard(self, info: Info[Context, None], tenant_id: strawberry.ID) -> CoreDashboard:
        tid = parse_id(tenant_id, "tenantId")
        await info.context.read(lambda ctx: dashboard.check(ctx, tid))
        made: CoreDashboard = Dashboard(tenant_id=strawberry.ID(str(tid)))
        return made
