"""The dashboard's figures through GraphQL, over rows laid down as the agents' reports
would leave them: agents by how recently heard from, jobs open and finished in the last
day, the VM catalog by life state, what the archive stores and saves, and the capacity
given back. A viewer reads it; another tenant's id answers as a missing one. Over HTTP,
against the real cloud on PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from dockyard.agent.protocol.vm import LifeState
from dockyard.cloud.domain.principal import Role
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import Agent, CatalogVm, Job, VmSighting

from ..factories import Gql, World, add_user, answers_as_missing, enrol_agent, make_world, system
from ..procs import Cloud

DASHBOARD = """query($t: ID!) { dashboard(tenantId: $t) { __typename
  ... on Dashboard { tenantId agents { online quiet revoked }
    jobs { pending running succeededLast24h failedLast24h }
    vms { byState { state count } storedBytes savedBytes vcpusReclaimed memoryMbReclaimed
          diskBytesReclaimed powerReclaimedWatts energyReclaimedKwh } }
  ... on Error { message } } }"""
GB = 1024**3


def _agents(world: World, tmp_path: Path) -> list[uuid.UUID]:
    """Four agents: heard from just now, an hour ago, never, and revoked."""
    ids = [enrol_agent(world, tmp_path) for _ in range(4)]
    now = datetime.now(UTC)
    with system(world.db, world.tenant_id) as ctx:
        ctx.session.execute(update(Agent).where(Agent.id == ids[0]).values(last_seen_at=now))
        ctx.session.execute(
            update(Agent).where(Agent.id == ids[1]).values(last_seen_at=now - timedelta(hours=1))
        )
        ctx.session.execute(update(Agent).where(Agent.id == ids[3]).values(revoked_at=now))
    return ids


def _jobs(world: World, agent_id: uuid.UUID) -> None:
    now = datetime.now(UTC)
    long_ago = now - timedelta(days=2)
    rows = [
        ("pending", now),
        ("running", now),
        ("running", long_ago),  # open jobs count however old
        ("succeeded", now),
        ("succeeded", long_ago),
        ("failed", now),
        ("timed_out", now - timedelta(hours=23)),
        ("failed", long_ago),
    ]
    with system(world.db, world.tenant_id) as ctx:
        for state, at in rows:
            ctx.session.add(
                Job(
                    tenant_id=world.tenant_id,
                    agent_id=agent_id,
                    kind="noop.echo",
                    state=state,
                    created_at=at,
                    updated_at=at,
                )
            )


def _vm(
    ctx: Any,
    world: World,
    agent_id: uuid.UUID,
    sightings: list[tuple[LifeState, dict[str, Any], int | None, int | None, timedelta]],
    since: timedelta | None = None,
) -> None:
    """One catalog VM and its sightings: (state, record, size before, stored, age); `since`:
    how long ago its sightings' life state began (none: a row from before migration 0008)."""
    now = datetime.now(UTC)
    vm = CatalogVm(tenant_id=world.tenant_id, name="vm", created_at=now, updated_at=now)
    ctx.session.add(vm)
    ctx.session.flush()
    for i, (state, record, before, stored, age) in enumerate(sightings):
        ctx.session.add(
            VmSighting(
                tenant_id=world.tenant_id,
                agent_id=agent_id,
                endpoint=f"ep{i}",
                native_id=str(vm.id),
                vm_id=vm.id,
                name="vm",
                power_state="off" if state is not LifeState.RUNNING else "on",
                idle_state="idle",
                identifiers={},
                record=record,
                seen_at=now - age,
                life_state=state.value,
                size_before=before,
                stored_bytes=stored,
                archived_at=now if state is LifeState.ARCHIVED else None,
                life_since=now - since if since is not None else None,
            )
        )


def _catalog(world: World, agent_id: uuid.UUID) -> None:
    fresh, older = timedelta(0), timedelta(hours=3)
    with system(world.db, world.tenant_id) as ctx:
        _vm(
            ctx,
            world,
            agent_id,
            [(LifeState.RUNNING, {"cpus": 4, "memory_mb": 8192}, None, None, fresh)],
        )
        _vm(
            ctx,
            world,
            agent_id,
            [(LifeState.OFF, {"cpus": 2, "memory_mb": 4096}, None, None, fresh)],
            since=timedelta(days=10),
        )
        _vm(
            ctx,
            world,
            agent_id,
            [(LifeState.ARCHIVED, {"cpus": 8, "memory_mb": 16384}, 100 * GB, 30 * GB, fresh)],
            since=timedelta(days=30),
        )
        # Restored since: its newest sighting runs, so it counts as running, reclaiming nothing.
        _vm(
            ctx,
            world,
            agent_id,
            [
                (LifeState.ARCHIVED, {"cpus": 16, "memory_mb": 1}, 50 * GB, 10 * GB, older),
                (LifeState.RUNNING, {"cpus": 16, "memory_mb": 1}, None, None, fresh),
            ],
        )
        # A record without figures (an older agent's) counts in its state and adds nothing.
        _vm(ctx, world, agent_id, [(LifeState.IDLE, {}, None, None, fresh)])


def test_the_dashboard_counts_agents_jobs_and_the_vm_catalog(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    world = make_world(pg)
    agents = _agents(world, tmp_path)
    _jobs(world, agents[0])
    _catalog(world, agents[0])
    # Another tenant's rows never count here.
    other = make_world(pg)
    other_agent = enrol_agent(other, tmp_path)
    _jobs(other, other_agent)
    _catalog(other, other_agent)

    _, viewer_token = add_user(pg, world.tenant_id, Role.VIEWER)  # the dashboard is a read
    answer = Gql(cloud.url, viewer_token).data(DASHBOARD, t=str(world.tenant_id))["dashboard"]
    assert answer["__typename"] == "Dashboard", answer
    assert answer["tenantId"] == str(world.tenant_id)
    assert answer["agents"] == {"online": 1, "quiet": 2, "revoked": 1}
    assert answer["jobs"] == {
        "pending": 1,
        "running": 2,
        "succeededLast24h": 1,
        "failedLast24h": 2,
    }
    vms = answer["vms"]
    by_state = {row["state"]: row["count"] for row in vms["byState"]}
    assert [row["state"] for row in vms["byState"]] == [s.name for s in LifeState]
    assert {s: n for s, n in by_state.items() if n} == {
        "RUNNING": 2,
        "OFF": 1,
        "ARCHIVED": 1,
        "IDLE": 1,
    }
    assert (vms["storedBytes"], vms["savedBytes"], vms["diskBytesReclaimed"]) == (
        30 * GB,
        70 * GB,
        100 * GB,
    )
    assert (vms["vcpusReclaimed"], vms["memoryMbReclaimed"]) == (2 + 8, 4096 + 16384)
    # Idle draw: 0.74 W a vCPU and 0.392 W a GiB; off 10 days (2 vCPUs, 4 GiB), archived 30
    # days (8 vCPUs, 16 GiB).
    off_w, archived_w = 2 * 0.74 + 4 * 0.392, 8 * 0.74 + 16 * 0.392
    assert vms["powerReclaimedWatts"] == pytest.approx(off_w + archived_w)
    expected_kwh = (off_w * 240 + archived_w * 720) / 1000
    assert vms["energyReclaimedKwh"] == pytest.approx(expected_kwh, abs=0.01)


def test_an_empty_tenant_answers_zeros(cloud: Cloud, pg: Database) -> None:
    world = make_world(pg)
    answer = Gql(cloud.url, world.token).data(DASHBOARD, t=str(world.tenant_id))["dashboard"]
    assert answer["agents"] == {"online": 0, "quiet": 0, "revoked": 0}
    assert set(answer["jobs"].values()) == {0}
    assert {row["count"] for row in answer["vms"]["byState"]} == {0}
    assert answer["vms"]["storedBytes"] == answer["vms"]["vcpusReclaimed"] == 0


def test_another_tenants_id_answers_as_a_missing_one(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    mine, theirs = make_world(pg), make_world(pg)
    enrol_agent(theirs, tmp_path)
    gql = Gql(cloud.url, mine.token)
    answer = answers_as_missing(gql, DASHBOARD, "t", theirs.tenant_id)
    assert answer["data"]["dashboard"]["__typename"] == "TenantNotFound"
    bad = gql.data(DASHBOARD, t="not-an-id")["dashboard"]
    assert bad["__typename"] == "InvalidInput"
