"""Cloud-managed storage for agents: who may have URLs signed, and the audit of it.

Only an agent whose effective flow mode is `data` gets URLs, and only for keys under its
own tenant's prefix (the transport adds the prefix from the access token; the agent names
only the rest). Each signing request is audited by operation and count; the bytes go
straight between agent and storage.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta

from dockyard.agent.protocol import FlowMode, SignItem

from . import agents, audit
from .context import Ctx
from .errors import FlowModeForbids

URL_LIFETIME = timedelta(minutes=10)


def authorize(ctx: Ctx, agent_id: uuid.UUID, items: list[SignItem], what: str = "sign") -> int:
    """Check the agent may use cloud storage now; returns the URLs' expiry (Unix time)."""
    agent = agents.active(ctx, agent_id)
    mode = agents.flow_mode(ctx.session, agent)
    if mode is not FlowMode.DATA:
        raise FlowModeForbids(
            f"flow mode {mode.value} moves no data to cloud storage; nothing was signed"
        )
    counts = Counter(item.op.value for item in items)
    audit.record(
        ctx, agent.tenant_id, f"storage.{what}", count=len(items), ops=dict(sorted(counts.items()))
    )
    return int((ctx.now() + URL_LIFETIME).timestamp())
