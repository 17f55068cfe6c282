"""Commands and the jobs that carry them out: the types, queries and mutations."""

from datetime import datetime, timedelta
from typing import Annotated, cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from dockyard.agent.protocol import JobEventKind
from dockyard.cloud.domain import commands, jobs
from dockyard.cloud.domain import rows as r
from dockyard.cloud.domain.permissions import Permission as P
from dockyard.cloud.domain.states import CommandState, JobState

from . import relay
from .context import Context
from .errors import (
    AgentNotFound,
    AgentRevoked,
    CommandNotFound,
    InvalidInput,
    JobNotFound,
    PermissionDenied,
    TenantArchived,
    TenantNotFound,
)
from .fields import json_object, mutation, parse_id, query

strawberry.enum(JobEventKind, description="What a job event reports.")


# The states and their one transition table live in the domain (cloud/domain/states.py).
strawberry.enum(CommandState, description="Where a command is on its way to the agent and back.")
strawberry.enum(JobState, description="Where a job's execution is.")


@strawberry.type
class JobEvent:
    kind: JobEventKind
    at: datetime
    progress: float | None
    code: str | None
    counts: JSON
    detail: str | None

    @classmethod
    def of(cls, row: r.JobEvent) -> "JobEvent":
        return cls(
            kind=JobEventKind(row.kind),
            at=row.at,
            progress=row.progress,
            code=row.code,
            counts=cast(JSON, row.counts),
            detail=row.detail,
        )


JobEventConnection = relay.Connection[JobEvent]


@strawberry.type
class Job:
    id: strawberry.ID
    tenant_id: strawberry.ID
    agent_id: strawberry.ID
    command_id: strawberry.ID | None
    kind: str
    state: JobState
    progress: float | None
    result_code: str | None
    created_at: datetime
    updated_at: datetime

    @strawberry.field
    async def events(
        self, info: Info[Context, None], first: int = relay.FIRST, after: str | None = None
    ) -> JobEventConnection:
        """The job's events in the order the agent stated them."""
        jid = parse_id(self.id, "id")
        page = await info.context.read(
            lambda ctx: jobs.events(ctx, jid, relay.request(first, after))
        )
        return relay.connection(page, JobEvent.of, after)

    @classmethod
    def of(cls, row: r.Job) -> "Job":
        return cls(
            id=strawberry.ID(str(row.id)),
            tenant_id=strawberry.ID(str(row.tenant_id)),
            agent_id=strawberry.ID(str(row.agent_id)),
            command_id=strawberry.ID(str(row.command_id)) if row.command_id else None,
            kind=row.kind,
            state=JobState(row.state),
            progress=row.progress,
            result_code=row.result_code,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@strawberry.type
class Command:
    id: strawberry.ID
    tenant_id: strawberry.ID
    agent_id: strawberry.ID
    job_id: strawberry.ID
    seq: int
    name: str
    args: JSON
    state: CommandState
    idempotency_key: str | None
    issued_at: datetime
    expires_at: datetime
    sent_at: datetime | None
    acked_at: datetime | None
    finished_at: datetime | None
    result_code: str | None

    @strawberry.field
    async def job(self, info: Info[Context, None]) -> Job | None:
        loader = info.context.loader("job", lambda ctx, ids: ctx.load(r.Job, ids))
        row = await loader.load(parse_id(self.job_id, "jobId"))
        return Job.of(row) if row else None

    @classmethod
    def of(cls, row: r.Command) -> "Command":
        return cls(
            id=strawberry.ID(str(row.id)),
            tenant_id=strawberry.ID(str(row.tenant_id)),
            agent_id=strawberry.ID(str(row.agent_id)),
            job_id=strawberry.ID(str(row.job_id)),
            seq=row.seq,
            name=row.name,
            args=cast(JSON, row.args),
            state=CommandState(row.state),
            idempotency_key=row.idempotency_key,
            issued_at=row.issued_at,
            expires_at=row.expires_at,
            sent_at=row.sent_at,
            acked_at=row.acked_at,
            finished_at=row.finished_at,
            result_code=row.result_code,
        )


@strawberry.type
class IssuedCommands:
    commands: list[Command] = strawberry.field(
        description="One command per agent named, in the order named (at most 1000): what "
        "this mutation made, whole, so not a connection."
    )


CommandConnection = relay.Connection[Command]
JobConnection = relay.Connection[Job]

CommandsResult = Annotated[
    CommandConnection | AgentNotFound | PermissionDenied | InvalidInput,
    strawberry.union("CommandsResult"),
]
CommandResult = Annotated[
    Command | CommandNotFound | PermissionDenied | InvalidInput, strawberry.union("CommandResult")
]
JobsResult = Annotated[
    JobConnection | TenantNotFound | PermissionDenied | InvalidInput,
    strawberry.union("JobsResult"),
]
JobResult = Annotated[
    Job | JobNotFound | PermissionDenied | InvalidInput, strawberry.union("JobResult")
]
IssueCommandResult = Annotated[
    Command | AgentNotFound | AgentRevoked | PermissionDenied | TenantArchived | InvalidInput,
    strawberry.union("IssueCommandResult"),
]
IssueCommandsResult = Annotated[
    IssuedCommands
    | AgentNotFound
    | AgentRevoked
    | PermissionDenied
    | TenantArchived
    | InvalidInput,
    strawberry.union("IssueCommandsResult"),
]


@strawberry.type
class CommandQuery:
    @query(CommandsResult)
    async def commands(
        self,
        info: Info[Context, None],
        agent_id: strawberry.ID,
        state: CommandState | None = None,
        first: int = relay.FIRST,
        after: str | None = None,
    ) -> CommandConnection:
        aid = parse_id(agent_id, "agentId")
        wanted = state.value if state is not None else None
        page = await info.context.read(
            lambda ctx: commands.listing(ctx, aid, relay.request(first, after), state=wanted)
        )
        return relay.connection(page, Command.of, after)

    @query(CommandResult)
    async def command(self, info: Info[Context, None], id: strawberry.ID) -> Command:
        cid = parse_id(id, "id")
        return Command.of(await info.context.read(lambda ctx: commands.get(ctx, cid)))

    @query(JobsResult)
    async def jobs(
        self,
        info: Info[Context, None],
        tenant_id: strawberry.ID,
        agent_id: strawberry.ID | None = None,
        first: int = relay.FIRST,
        after: str | None = None,
        newest_first: bool = False,
    ) -> JobConnection:
        tid = parse_id(tenant_id, "tenantId")
        aid = parse_id(agent_id, "agentId") if agent_id is not None else None
        page = await info.context.read(
            lambda ctx: jobs.listing(
                ctx, tid, relay.request(first, after), agent_id=aid, newest_first=newest_first
            )
        )
        return relay.connection(page, Job.of, after)

    @query(JobResult)
    async def job(self, info: Info[Context, None], id: strawberry.ID) -> Job:
        jid = parse_id(id, "id")
        return Job.of(await info.context.read(lambda ctx: jobs.get(ctx, jid)))


@strawberry.type
class CommandMutation:
    @mutation(IssueCommandResult, P.COMMAND_ISSUE)
    async def issue_command(
        self,
        info: Info[Context, None],
        agent_id: strawberry.ID,
        name: str,
        args: JSON | None = None,
        ttl_seconds: int = 3600,
        timeout_seconds: int = 3600,
        idempotency_key: str | None = None,
    ) -> Command:
        aid = parse_id(agent_id, "agentId")
        values = (
            json_object(args, "command arguments are a JSON object") if args is not None else {}
        )
        row = await info.context.write(
            lambda ctx: commands.issue(
                ctx,
                aid,
                name,
                values,
                ttl=timedelta(seconds=ttl_seconds),
                timeout=timedelta(seconds=timeout_seconds),
                idempotency_key=idempotency_key,
            )
        )
        return Command.of(row)

    @mutation(IssueCommandsResult, P.COMMAND_ISSUE)
    async def issue_commands(
        self,
        info: Info[Context, None],
        agent_ids: list[strawberry.ID],
        name: str,
        args: JSON | None = None,
        ttl_seconds: int = 3600,
        timeout_seconds: int = 3600,
    ) -> IssuedCommands:
        """One command to each of many agents (at most 1000) in one transaction."""
        ids = [parse_id(a, "agentIds") for a in agent_ids]
        values = (
            json_object(args, "command arguments are a JSON object") if args is not None else {}
        )
        issued = await info.context.write(
            lambda ctx: commands.issue_many(
                ctx,
                ids,
                name,
                values,
                ttl=timedelta(seconds=ttl_seconds),
                timeout=timedelta(seconds=timeout_seconds),
            )
        )
        return IssuedCommands(commands=[Command.of(c) for c in issued])
