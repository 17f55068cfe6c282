"""A module's cloud side is its own folder and one registry line: a throwaway module, declared
here and registered for the test alone, gets its policy kind validated, its metadata
ingested, its timer run and its features unlocked, on the real PostgreSQL, through the
cloud's own GraphQL and agent API, without any other file naming it."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from dockyard.agent import keys
from dockyard.agent import protocol as p
from dockyard.cloud import modules, scheduler
from dockyard.cloud.app import create_app
from dockyard.cloud.domain import audit, features
from dockyard.cloud.domain.context import Ctx
from dockyard.cloud.domain.errors import Invalid
from dockyard.cloud.domain.modules import CloudModule, Timer, TimerEnv
from dockyard.cloud.domain.principal import Principal
from dockyard.cloud.settings import Settings
from dockyard.cloud.store.models import Agent, AuditRecord, MetadataBatch
from dockyard.cloud.store.tenancy import unscoped

from ..factories import enrolment_secret, make_world

V = {p.VERSION_HEADER: p.PROTOCOL_VERSION}
BASE = "http://127.0.0.1:8080"


class ScratchRules(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(ge=1, le=10)
    label: str = "scratch"


def feed_counts(ctx: Ctx, agent: Agent, records: list[dict[str, Any]]) -> int:
    """The module's ingest: refuses a negative count (so the batch stores nothing), else
    writes the total to the tenant's audit log."""
    if any(int(r.get("n", 0)) < 0 for r in records):
        raise Invalid("a scratch count is never negative")
    total = sum(int(r.get("n", 0)) for r in records)
    audit.record(ctx, agent.tenant_id, "scratch.counted", target=str(agent.id), total=total)
    return total


def tally(env: TimerEnv) -> Counter[str]:
    """The module's timer: one audit record per tenant that sent scratch batches."""
    why = "the test timer finds every tenant's scratch batches"
    with env.db.transaction() as session, unscoped(session, why):
        tenants = set(
            session.scalars(
                select(MetadataBatch.tenant_id).where(MetadataBatch.module == "scratch")
            )
        )
    done: Counter[str] = Counter()
    for tenant_id in tenants:
        with env.db.transaction([tenant_id]) as session:
            ctx = Ctx(session, Principal.system(frozenset({tenant_id})), env.clock)
            audit.record(ctx, tenant_id, "scratch.tallied")
            done["tallied"] += 1
    return done


SCRATCH = CloudModule(
    name="scratch",
    policies={"scratch-rules": ScratchRules},
    ingest={"scratch.counts": feed_counts},
    timers=(Timer("scratch.tally", lambda settings: 0.01, tally),),
    plans={"enterprise": frozenset({"scratch-basic", "scratch-report"})},
    needs_flow={"scratch-report": p.FlowMode.METADATA},
)


@pytest.fixture
def with_scratch(monkeypatch: pytest.MonkeyPatch) -> None:
    both = (*modules.registry(), SCRATCH)
    monkeypatch.setattr(modules, "registry", lambda: both)


@pytest.fixture
def cloud(with_scratch: None, pg_url: str, tmp_path: Path) -> Iterator[Any]:
    app = create_app(Settings(database_url=pg_url, data_dir=tmp_path, secret_key="s" * 40))
    yield app
    app.state.services.db.dispose()


@contextlib.asynccontextmanager
async def client(app: Any) -> Any:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        yield c


async def dock(c: httpx.AsyncClient, world: Any, key_path: Path) -> tuple[str, dict[str, str]]:
    key = keys.generate(key_path)
    body = p.EnrollRequest(
        token=enrolment_secret(world),
        public_key=keys.public_b64(key),
        host=p.HostFacts(hostname="scratch-host"),
        modules=[p.ModuleInfo(name="scratch", version="0.1")],
        max_flow=p.FlowMode.METADATA,
    )
    enrolled = (await c.post("/agent/v1/enroll", content=body.model_dump_json(), headers=V)).json()
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": p.ASSERTION_TYPE,
        "client_assertion": keys.assertion(key, enrolled["agent_id"], enrolled["token_url"]),
    }
    token = (await c.post("/agent/v1/token", data=form, headers=V)).json()["access_token"]
    return enrolled["agent_id"], {**V, "Authorization": f"Bearer {token}"}


async def graphql(c: httpx.AsyncClient, token: str, query: str, **variables: Any) -> Any:
    r = await c.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert "errors" not in body, body
    return body["data"]


CREATE = """mutation($t: ID!, $doc: JSON!) {
  createPolicy(tenantId: $t, name: "scratch", kind: "scratch-rules", document: $doc) {
    __typename ... on Policy { id } ... on Error { message } } }"""
ASSIGN = """mutation($p: ID!, $a: ID!) {
  assignPolicy(policyId: $p, targetKind: AGENT, targetId: $a) { __typename } }"""


def test_its_policy_metadata_timer_and_features(cloud: Any) -> None:
    world = make_world(cloud.state.services.db)
    svc = cloud.state.services

    async def go() -> None:
        async with client(cloud) as c:
            agent_id, auth = await dock(c, world, svc.settings.data_dir / "scratch.key")

            # Its policy kind is known and checked by its own model.
            bad = await graphql(c, world.token, CREATE, t=str(world.tenant_id), doc={"limit": 0})
            assert bad["createPolicy"]["__typename"] == "InvalidInput"
            assert "limit" in bad["createPolicy"]["message"]
            good = await graphql(c, world.token, CREATE, t=str(world.tenant_id), doc={"limit": 3})
            assert good["createPolicy"]["__typename"] == "Policy"
            policy_id = good["createPolicy"]["id"]
            assigned = await graphql(c, world.token, ASSIGN, p=policy_id, a=agent_id)
            assert assigned["assignPolicy"]["__typename"] == "PolicyAssignment"

            # The agent receives the document as the model dumps it, and its features.
            r = await c.get("/agent/v1/poll", params={"after": 0, "wait": 0}, headers=auth)
            assert r.status_code == 200, r.text
            poll = p.PollResponse.model_validate_json(r.content)
            docs = [e.document for e in poll.entries if isinstance(e, p.PolicyEntry)]
            assert docs == [{"limit": 3, "label": "scratch"}]
            assert poll.features == {"scratch": ["scratch-basic", "scratch-report"]}

            # Its metadata feeds its ingest, in the batch's transaction.
            refused = p.MetadataBatch(
                batch_id=uuid.uuid4(), module="scratch", kind="scratch.counts", records=[{"n": -1}]
            )
            r = await c.post("/agent/v1/metadata", content=refused.model_dump_json(), headers=auth)
            assert r.status_code == 422, r.text
            taken = p.MetadataBatch(
                batch_id=uuid.uuid4(),
                module="scratch",
                kind="scratch.counts",
                records=[{"n": 2}, {"n": 3}],
            )
            r = await c.post("/agent/v1/metadata", content=taken.model_dump_json(), headers=auth)
            assert r.status_code == 200, r.text

            with svc.db.transaction([world.tenant_id]) as session:
                stored = set(session.scalars(select(MetadataBatch.batch_id)))
                counted = list(
                    session.scalars(
                        select(AuditRecord.detail).where(AuditRecord.action == "scratch.counted")
                    )
                )
            assert stored == {taken.batch_id}, "the refused batch stored nothing"
            assert [d["total"] for d in counted] == [5]

    asyncio.run(go())

    # Its timer runs on demand by name, and by its period in the scheduler's loop.
    assert scheduler.run(svc, "scratch.tally")["tallied"] >= 1

    async def loop_a_while() -> None:
        task = asyncio.create_task(scheduler.forever(svc))
        try:
            for _ in range(500):
                await asyncio.sleep(0.01)
                if tallied(svc, world.tenant_id) >= 3:
                    break
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(loop_a_while())
    assert tallied(svc, world.tenant_id) >= 3, "the loop ran the timer at its period"


def tallied(svc: Any, tenant_id: uuid.UUID) -> int:
    with svc.db.transaction([tenant_id]) as session:
        count = session.scalar(select(func.count()).where(AuditRecord.action == "scratch.tallied"))
    return int(count or 0)


def test_a_feature_the_flow_mode_forbids_is_withheld(with_scratch: None) -> None:
    assert features.unlocked("enterprise", p.FlowMode.CONFIG, ["scratch"]) == {
        "scratch": ["scratch-basic"]
    }
    assert features.unlocked("free", p.FlowMode.DATA, ["scratch"]) == {"scratch": []}


def test_a_policy_kind_two_modules_claim_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    twin = CloudModule(name="twin", policies={"scratch-rules": ScratchRules})
    monkeypatch.setattr(modules, "registry", lambda: (SCRATCH, twin))
    from dockyard.cloud.domain import policies

    with pytest.raises(RuntimeError, match="declared by two modules"):
        policies.validate("scratch-rules", {"limit": 1})


def test_without_its_line_the_cloud_knows_nothing_of_it() -> None:
    from dockyard.cloud.domain import policies

    with pytest.raises(Invalid, match="unknown policy kind 'scratch-rules'"):
        policies.validate("scratch-rules", {"limit": 1})
    assert features.unlocked("enterprise", p.FlowMode.DATA, ["scratch"]) == {"scratch": []}
