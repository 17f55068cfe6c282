"""Enrolment tokens: hashed, single-use, expiring, bound; host facts are only claims."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from dockyard.agent import keys
from dockyard.agent.protocol import EnrollRequest, FlowMode, HostFacts
from dockyard.cloud.domain import enrolment
from dockyard.cloud.domain.clock import ManualClock, SystemClock
from dockyard.cloud.domain.context import Ctx
from dockyard.cloud.domain.errors import Unauthenticated
from dockyard.cloud.domain.principal import Principal
from dockyard.cloud.domain.secrets import hash_secret
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import Agent, EnrolmentToken

from ..factories import enrolment_secret, make_world, system


def request(token: str, tmp_path, machine_id: str = "", bios: str = "") -> EnrollRequest:
    key = keys.generate(tmp_path / f"{token[-6:]}-{machine_id}.key")
    return EnrollRequest(
        token=token,
        public_key=keys.public_b64(key),
        host=HostFacts(hostname="h", machine_id=machine_id, bios_uuid=bios),
        max_flow=FlowMode.DATA,
    )


def enroll(db: Database, req: EnrollRequest, clock=None) -> Agent:
    with db.transaction() as session:
        return enrolment.enroll(
            Ctx(session, Principal("anonymous", None), clock or SystemClock()), req
        )


def test_token_is_stored_hashed(db: Database) -> None:
    world = make_world(db)
    secret = enrolment_secret(world)
    with system(db, world.tenant_id) as ctx:
        rows = ctx.session.scalars(select(EnrolmentToken)).all()
    assert all(secret.encode() not in r.token_hash for r in rows)
    assert hash_secret(secret) in {r.token_hash for r in rows}


def test_token_is_single_use_and_bound(db: Database, tmp_path) -> None:
    world = make_world(db)
    secret = enrolment_secret(world, max_flow=FlowMode.METADATA)
    agent = enroll(db, request(secret, tmp_path))
    assert agent.tenant_id == world.tenant_id
    assert agent.site_id == world.site_id
    assert agent.max_flow == "metadata"  # the token's ceiling narrows the agent's wish (data)
    with pytest.raises(Unauthenticated, match="used, revoked or has expired"):
        enroll(db, request(secret, tmp_path, machine_id="other"))


def test_expired_and_revoked_tokens_are_refused(db: Database, tmp_path) -> None:
    world = make_world(db)
    clock = ManualClock(SystemClock().now())
    secret = enrolment_secret(world, ttl=timedelta(minutes=5), clock=clock)
    clock.advance(timedelta(minutes=6))
    with pytest.raises(Unauthenticated):
        enroll(db, request(secret, tmp_path), clock)
    revoked = enrolment_secret(world)
    with system(db, world.tenant_id) as ctx:
        token = ctx.session.scalar(
            select(EnrolmentToken).where(EnrolmentToken.token_hash == hash_secret(revoked))
        )
        assert token is not None
        enrolment.revoke_token(ctx, token.id)
    with pytest.raises(Unauthenticated):
        enroll(db, request(revoked, tmp_path))
    with pytest.raises(Unauthenticated, match="unknown"):
        enroll(db, request("dy_enr_" + "x" * 40, tmp_path))


def test_two_enrolments_race_for_one_token_and_one_wins(pg: Database, tmp_path) -> None:
    for _ in range(5):
        world = make_world(pg)
        secret = enrolment_secret(world)
        reqs = [request(secret, tmp_path, machine_id=f"m{i}") for i in range(2)]
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        def go(req: EnrollRequest) -> None:
            barrier.wait()
            try:
                enroll(pg, req)
                outcomes.append("won")
            except Unauthenticated:
                outcomes.append("lost")

        threads = [threading.Thread(target=go, args=(r,)) for r in reqs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["lost", "won"]
        with system(pg, world.tenant_id) as ctx:
            assert len(ctx.session.scalars(select(Agent)).all()) == 1


def test_a_known_machine_gets_a_new_agent_flagged_as_duplicate(db: Database, tmp_path) -> None:
    world = make_world(db)
    first = enroll(
        db, request(enrolment_secret(world), tmp_path, machine_id="mid-1", bios="bios-1")
    )
    second = enroll(
        db, request(enrolment_secret(world), tmp_path, machine_id="mid-1", bios="bios-1")
    )
    assert second.id != first.id
    assert second.possible_duplicate_of == [str(first.id)]
    assert second.public_key != first.public_key
    assert second.last_seq == 0
