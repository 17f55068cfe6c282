"""Figures across every tenant, for the operator's `/metrics`: jobs by state, agents by
state, and what each module adds (the VM module: bytes its archives hold).

The operator runs the replicas for all tenants, so these reads are the one place outside
the timers that looks past the tenancy wall; they return only counts and sums, never a row,
and nothing here is reachable from GraphQL. One aggregate statement each, run at scrape time
on a connection of the scrape's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dockyard.cloud.store.models import Job

from . import modules
from .dashboard import count_agents


@dataclass(frozen=True)
class Gauge:
    name: str
    help: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()


def gauges(session: Session, now: datetime) -> list[Gauge]:
    out = [
        Gauge("dockyard_jobs", "Jobs by state, every tenant", n, (("state", state),))
        for state, n in session.execute(select(Job.state, func.count()).group_by(Job.state))
    ]
    agents = count_agents(session, now)
    for state, n in (
        ("online", agents.online),
        ("quiet", agents.quiet),
        ("revoked", agents.revoked),
    ):
        out.append(
            Gauge("dockyard_agents", "Agents by state, every tenant", n, (("state", state),))
        )
    for module in modules.registry():
        if module.fleet is not None:
            out.extend(module.fleet(session))
    return out
