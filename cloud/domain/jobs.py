"""Jobs and their events, reported by the agent that runs them and by no one else."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from dockyard.agent.protocol import FlowMode, JobEventKind, event_fits_flow, vocabulary
from dockyard.agent.protocol import JobEvent as WireEvent
from dockyard.cloud.store.models import Command, Job, JobEvent

from . import agents, states
from .context import Ctx
from .errors import FlowModeForbids, NotFound
from .pages import Page, PageRequest, keyset
from .permissions import Permission as P
from .states import CommandState as C
from .states import JobState as J

_FINAL = {JobEventKind.SUCCEEDED: J.SUCCEEDED, JobEventKind.FAILED: J.FAILED}


def get(ctx: Ctx, job_id: uuid.UUID) -> Job:
    job = ctx.session.get(Job, job_id)
    if job is None:
        raise NotFound("job")
    ctx.principal.require(job.tenant_id, P.JOB_READ, "job")
    return job


def report(ctx: Ctx, agent_id: uuid.UUID, job_id: uuid.UUID, events: list[WireEvent]) -> Job:
    """Record events from `agent_id`; another agent's job is 'not found', like a missing one."""
    agent = agents.active(ctx, agent_id)
    job = ctx.session.get(Job, job_id)
    if job is None or job.agent_id != agent_id:
        raise NotFound("job")
    mode = agents.flow_mode(ctx.session, agent)
    if not all(event_fits_flow(e, mode) for e in events):
        raise FlowModeForbids(f"flow mode {mode.value} carries no free text in job events")
    command = ctx.session.get(Command, job.command_id) if job.command_id else None
    if mode is FlowMode.CONFIG:
        module = command.name.split(".", 1)[0] if command is not None else None
        sent_keys = [k for e in events for k in e.counts]
        if not vocabulary.fits((e.code for e in events), sent_keys, module):
            # The offending word is not repeated: it may be the very name that must not go up.
            raise FlowModeForbids(
                "flow mode config carries only the codes and count keys its modules declare"
            )
    now = ctx.now()
    for event in events:
        ctx.session.add(
            JobEvent(
                tenant_id=job.tenant_id,
                job_id=job.id,
                kind=event.kind.value,
                at=event.at,
                progress=event.progress,
                code=event.code,
                counts=dict(event.counts),
                detail=event.detail,
                received_at=now,
            )
        )
        if job.state in states.JOB_FINAL:
            continue  # a late event is kept, but a final state stays final
        if event.kind is JobEventKind.STARTED:
            job.state = states.move(job.state, J.RUNNING)
        if event.progress is not None:
            job.progress = event.progress
        if event.kind in _FINAL:
            job.state = states.move(job.state, _FINAL[event.kind])
            job.result_code = event.code
            job.progress = 1.0 if event.kind is JobEventKind.SUCCEEDED else job.progress
        if command is not None and command.state in states.COMMAND_OPEN:
            follows = C.RUNNING if job.state in (J.RUNNING, J.PENDING) else C(job.state)
            command.state = states.move(command.state, follows)
            if job.state in (J.SUCCEEDED, J.FAILED):
                command.finished_at = now
                command.result_code = event.code
    job.updated_at = now
    return job


# --- reads for the transports ---------------------------------------------------------------


def listing(
    ctx: Ctx,
    tenant_id: uuid.UUID,
    request: PageRequest,
    *,
    agent_id: uuid.UUID | None = None,
    newest_first: bool = False,
) -> Page[Job]:
    """The tenant's jobs, oldest first (or newest, as a page of recent work wants them),
    optionally one agent's."""
    ctx.principal.require(tenant_id, P.JOB_READ)
    stmt = select(Job).where(Job.tenant_id == tenant_id)
    if agent_id is not None:
        stmt = stmt.where(Job.agent_id == agent_id)
    return keyset(ctx.session, stmt, Job.created_at, request, descending=newest_first)


def events(ctx: Ctx, job_id: uuid.UUID, request: PageRequest) -> Page[JobEvent]:
    """A job's events in the order the agent stated them (its `at`): the events of one
    report arrive together, with one `received_at`, so that would not order them."""
    job = get(ctx, job_id)
    stmt = select(JobEvent).where(JobEvent.job_id == job.id)
    return keyset(ctx.session, stmt, JobEvent.at, request)
