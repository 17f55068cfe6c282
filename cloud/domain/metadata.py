"""Upward metadata batches: append-only, idempotent by batch id, gated by the flow mode."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from dockyard.agent.protocol import FlowMode, vocabulary
from dockyard.agent.protocol import MetadataBatch as WireBatch
from dockyard.cloud.store.models import MetadataBatch

from . import agents, audit, modules
from .context import Ctx
from .errors import FlowModeForbids


@dataclass(frozen=True)
class Accepted:
    batch_id: uuid.UUID
    duplicate: bool


def accept(ctx: Ctx, agent_id: uuid.UUID, batch: WireBatch, size_bytes: int) -> Accepted:
    agent = agents.active(ctx, agent_id)
    mode = agents.flow_mode(ctx.session, agent)
    if not mode.allows(FlowMode.METADATA) and not vocabulary.batch_fits_config(batch):
        raise FlowModeForbids(f"flow mode {mode.value} sends no metadata up; nothing was stored")
    earlier = ctx.session.scalar(
        select(MetadataBatch.id).where(
            MetadataBatch.tenant_id == agent.tenant_id, MetadataBatch.batch_id == batch.batch_id
        )
    )
    if earlier is not None:
        return Accepted(batch.batch_id, duplicate=True)
    try:
        with ctx.session.begin_nested():
            ctx.session.add(
                MetadataBatch(
                    tenant_id=agent.tenant_id,
                    batch_id=batch.batch_id,
                    agent_id=agent_id,
                    module=batch.module,
                    kind=batch.kind,
                    record_count=len(batch.records),
                    size_bytes=size_bytes,
                    records=list(batch.records),
                    received_at=ctx.now(),
                )
            )
    except IntegrityError:
        return Accepted(batch.batch_id, duplicate=True)
    feed = modules.ingest(batch.module, batch.kind)
    if feed is not None:  # same transaction: a record the module refuses stores nothing
        feed(ctx, agent, list(batch.records))
    audit.record(
        ctx,
        agent.tenant_id,
        "upload.metadata",
        target=str(batch.batch_id),
        kind=f"{batch.module}.{batch.kind}",
        count=len(batch.records),
        bytes=size_bytes,
    )
    return Accepted(batch.batch_id, duplicate=False)
