"""The cloud's side of VM archive and restore (issue 17): life states and archive records
from inventories, archiveVm / restoreVm and each refusal, the report and its totals, the
cloud-storage policy check, and the restore's mail sent exactly once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from dockyard.agent import protocol as p
from dockyard.agent.link import Link
from dockyard.cloud import scheduler
from dockyard.cloud.app import build_services
from dockyard.cloud.domain import metadata
from dockyard.cloud.domain.clock import SystemClock
from dockyard.cloud.settings import Settings
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import User, VmSighting

from ..factories import Gql, World, make_world, system
from ..integration.test_vault_brokered import docked_link
from ..procs import Cloud

ARCHIVED_AT = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)

VMS = """query($t: ID!) { vms(tenantId: $t) { __typename ... on VmConnection { edges { node {
  id name lifeState lifeReason archive { archivedAt snapshot sizeBefore storedBytes restoreCount
  restoredAt } sightings { lifeState } } } } } }"""
ARCHIVE = """mutation($v: ID!) { archiveVm(vmId: $v) { __typename
  ... on Command { id name args jobId } ... on Error { message } } }"""
RESTORE = """mutation($v: ID!, $d: String) { restoreVm(vmId: $v, datastore: $d) { __typename
  ... on Command { id name args jobId seq } ... on Error { message } } }"""
REPORT = """query($t: ID!, $after: String) {
  archivedVms(tenantId: $t, first: 1, after: $after) { __typename ... on ArchivedVmConnection {
    edges { cursor node { name endpoint archive { archivedAt sizeBefore storedBytes
    restoreCount } } } pageInfo { hasNextPage endCursor } } }
  vmArchiveTotals(tenantId: $t) { __typename ... on VmArchiveTotals { vmsArchived bytesFreed
    bytesStored } } }"""
POLICY = """mutation($t: ID!, $d: JSON!) { createPolicy(tenantId: $t, name: "arch",
  kind: "vm-lifecycle", document: $d) { __typename ... on Policy { id }
  ... on InvalidInput { message } } }"""


def vm(name: str, state: str, archive: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
    return {
        "endpoint": "vc",
        "native_id": f"vm-{name}",
        "name": name,
        "kind": "vm",
        "power_state": "off",
        "identifiers": {"instance_uuid": f"I-{name}", "bios_uuid": f"B-{name}", "macs": []},
        "seen_at": datetime.now(UTC).isoformat(),
        "life_state": state,
        "archive": archive,
        **more,
    }


def figures(size: int, stored: int, restores: int = 0) -> dict[str, Any]:
    return {
        "archived_at": ARCHIVED_AT.isoformat(),
        "snapshot": "snap-" + uuid.uuid4().hex[:8],
        "repository": "file:///var/lib/dockyard/archive",
        "size_before": size,
        "stored_bytes": stored,
        "restore_count": restores,
    }


def send(link: Link, records: list[dict[str, Any]]) -> None:
    link.metadata(
        p.MetadataBatch(batch_id=uuid.uuid4(), module="vm", kind="vm.inventory", records=records)
    )


def ids(gql: Gql, world: World) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in gql.nodes(VMS, t=str(world.tenant_id))}


def finish(link: Link, command: dict[str, Any], kind: p.JobEventKind, code: str) -> None:
    """The agent's side of a job: poll it, ack it, report progress and the end."""
    link.poll(after=int(command["seq"]) - 1, wait=0)
    link.ack([p.Ack(seq=int(command["seq"]))])
    now = datetime.now(UTC)
    link.job_events(
        command["jobId"],
        [
            p.JobEvent(kind=p.JobEventKind.STARTED, at=now),
            p.JobEvent(
                kind=p.JobEventKind.PROGRESS, at=now, progress=0.4, detail="3.2 GiB of 8 GiB"
            ),
            p.JobEvent(kind=kind, at=now, code=code),
        ],
    )


def _fleet(pg: Database) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from sqlalchemy.orm import Session

    from dockyard.cloud.domain import fleet
    from dockyard.cloud.modules.vm import dashboard

    with Session(pg.engine) as session:
        return {(g.name, g.labels): g.value for g in dashboard.fleet(session)} | {
            (g.name, g.labels): g.value
            for g in fleet.gauges(session, datetime.now(UTC))
            if g.name == "dockyard_vms_archived"
        }


def test_life_states_archive_records_and_the_report(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    world = make_world(pg, plan="standard")
    gql = Gql(cloud.url, world.token)
    link = docked_link(cloud, world, tmp_path, p.FlowMode.METADATA)
    fleet_before = _fleet(pg)
    send(
        link,
        [
            vm("big", "archived", figures(8 << 30, 3 << 30, restores=2)),
            vm("small", "archived", figures(1 << 30, 200 << 20)),
            vm("broken", "archive_failed", life_reason="vm_changed: a disk was added"),
            vm("live", "running"),
        ],
    )
    got = ids(gql, world)
    assert got["big"]["lifeState"] == "ARCHIVED"
    assert got["big"]["archive"]["sizeBefore"] == 8 << 30
    assert got["big"]["archive"]["storedBytes"] == 3 << 30
    assert got["big"]["archive"]["restoreCount"] == 2
    assert got["big"]["archive"]["snapshot"].startswith("snap-")
    assert got["broken"]["lifeState"] == "ARCHIVE_FAILED"
    assert got["broken"]["lifeReason"] == "vm_changed: a disk was added"
    assert got["broken"]["archive"] is None
    assert got["live"]["lifeState"] == "RUNNING"
    fleet_after = _fleet(pg)  # the operator's /metrics: the same figures, every tenant
    grew = {k: fleet_after[k] - fleet_before.get(k, 0) for k in fleet_after}
    assert grew[("dockyard_vms_archived", ())] == 2
    assert grew[("dockyard_vault_bytes", (("kind", "before"),))] == (8 << 30) + (1 << 30)
    assert grew[("dockyard_vault_bytes", (("kind", "stored"),))] == (3 << 30) + (200 << 20)

    report = gql.data(REPORT, t=str(world.tenant_id))
    page = report["archivedVms"]
    assert [e["node"]["name"] for e in page["edges"]] in (["big"], ["small"])
    assert page["pageInfo"]["hasNextPage"] is True
    rest = gql.data(REPORT, t=str(world.tenant_id), after=page["pageInfo"]["endCursor"])
    names = {page["edges"][0]["node"]["name"], rest["archivedVms"]["edges"][0]["node"]["name"]}
    assert names == {"big", "small"}
    assert rest["archivedVms"]["pageInfo"]["hasNextPage"] is False
    assert report["vmArchiveTotals"] == {
        "__typename": "VmArchiveTotals",
        "vmsArchived": 2,
        "bytesFreed": (8 << 30) + (1 << 30),
        "bytesStored": (3 << 30) + (200 << 20),
    }

    # the restore brings it back: the next inventory says so, and the report drops it
    send(link, [vm("small", "running", {**figures(1 << 30, 200 << 20, restores=1)})])
    totals = gql.data(REPORT, t=str(world.tenant_id))["vmArchiveTotals"]
    assert totals["vmsArchived"] == 1
    assert ids(gql, world)["small"]["archive"]["restoreCount"] == 1


def test_archive_and_restore_commands_and_their_refusals(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    world = make_world(pg, plan="standard")
    gql = Gql(cloud.url, world.token)
    link = docked_link(cloud, world, tmp_path, p.FlowMode.METADATA)
    send(
        link,
        [
            vm("off", "off"),
            vm("failed", "archive_failed", life_reason="repository_full"),
            vm("live", "running"),
            vm("stub", "archived", figures(5 << 30, 2 << 30)),
            vm("busy", "restoring", figures(5 << 30, 2 << 30)),
        ],
    )
    got = ids(gql, world)

    done = gql.data(ARCHIVE, v=got["off"]["id"])["archiveVm"]
    assert done["__typename"] == "Command"
    assert done["name"] == "vm.archive"
    assert done["args"] == {"endpoint": "vc", "native_id": "vm-off"}
    keyed = """mutation($v: ID!, $k: String) { archiveVm(vmId: $v, idempotencyKey: $k) {
      __typename ... on Command { id } } }"""
    first = gql.data(keyed, v=got["failed"]["id"], k="arch-failed-1")["archiveVm"]
    retry = gql.data(keyed, v=got["failed"]["id"], k="arch-failed-1")["archiveVm"]
    assert first["__typename"] == "Command"
    assert retry["id"] == first["id"]  # the issuer's retry returns the first command
    wrong = gql.data(ARCHIVE, v=got["live"]["id"])["archiveVm"]
    assert wrong["__typename"] == "VmLifeStateForbids"
    assert "running" in wrong["message"]
    assert gql.data(ARCHIVE, v=got["stub"]["id"])["archiveVm"]["__typename"] == (
        "VmLifeStateForbids"
    )
    missing = gql.data(ARCHIVE, v=str(uuid.uuid4()))["archiveVm"]
    assert missing["__typename"] == "VmNotFound"
    assert gql.data(ARCHIVE, v="nope")["archiveVm"]["__typename"] == "InvalidInput"

    with pg.transaction() as session:
        email = session.get(User, world.user_id).email  # type: ignore[union-attr]
    restored = gql.data(RESTORE, v=got["stub"]["id"], d="ds-2")["restoreVm"]
    assert restored["__typename"] == "Command"
    assert restored["args"] == {
        "endpoint": "vc",
        "native_id": "vm-stub",
        "datastore": "ds-2",
        "requested_by": email,
    }
    again = gql.data(RESTORE, v=got["stub"]["id"], d=None)["restoreVm"]
    assert again["__typename"] == "VmRestoreRunning"
    assert gql.data(RESTORE, v=got["busy"]["id"])["restoreVm"]["__typename"] == "VmRestoreRunning"
    assert gql.data(RESTORE, v=got["off"]["id"])["restoreVm"]["__typename"] == (
        "VmLifeStateForbids"
    )
    bad = gql.data(RESTORE, v=got["stub"]["id"], d="x\x00y")["restoreVm"]
    assert bad["__typename"] == "InvalidInput"

    # a failed restore may be asked again once the agent says so
    finish(link, restored, p.JobEventKind.FAILED, "datastore_full")
    send(link, [vm("stub", "restore_failed", figures(5 << 30, 2 << 30), life_reason="full")])
    assert gql.data(RESTORE, v=got["stub"]["id"])["restoreVm"]["__typename"] == "Command"

    # the agent revoked: it takes no more commands
    revoked = gql.data(
        """mutation($a: ID!) { revokeAgent(id: $a) { __typename } }""", a=str(link.agent_id)
    )
    assert revoked["revokeAgent"]["__typename"] == "Agent"
    assert gql.data(ARCHIVE, v=got["failed"]["id"])["archiveVm"]["__typename"] == "AgentRevoked"


def test_the_archive_feature_is_locked_on_the_free_plan(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    world = make_world(pg, plan="free")
    gql = Gql(cloud.url, world.token)
    link = docked_link(cloud, world, tmp_path, p.FlowMode.METADATA)
    send(link, [vm("off", "off"), vm("stub", "archived", figures(1, 1))])
    got = ids(gql, world)
    locked = gql.data(ARCHIVE, v=got["off"]["id"])["archiveVm"]
    assert locked["__typename"] == "FeatureLocked"
    assert "free plan" in locked["message"]
    assert gql.data(RESTORE, v=got["stub"]["id"])["restoreVm"]["__typename"] == "FeatureLocked"


def test_cloud_archive_storage_needs_flow_mode_data(cloud: Cloud, pg: Database) -> None:
    cloud_storage = {"archive": {"storage": {"kind": "cloud"}}}
    metadata_world = make_world(pg, flow=p.FlowMode.METADATA)
    refused = Gql(cloud.url, metadata_world.token).data(
        POLICY, t=str(metadata_world.tenant_id), d=cloud_storage
    )["createPolicy"]
    assert refused["__typename"] == "InvalidInput"
    assert "needs flow mode data" in refused["message"]
    directory = {"archive": {"storage": {"kind": "directory", "path": "/srv/archive"}}}
    fine = Gql(cloud.url, metadata_world.token).data(
        POLICY, t=str(metadata_world.tenant_id), d=directory
    )["createPolicy"]
    assert fine["__typename"] == "Policy"
    data_world = make_world(pg, flow=p.FlowMode.DATA)
    allowed = Gql(cloud.url, data_world.token).data(
        POLICY, t=str(data_world.tenant_id), d=cloud_storage
    )["createPolicy"]
    assert allowed["__typename"] == "Policy"


def test_the_requester_is_mailed_once_when_a_restore_ends(
    cloud: Cloud, pg: Database, pg_url: str, tmp_path: Path, smtp: Any
) -> None:
    world = make_world(pg, plan="standard")
    gql = Gql(cloud.url, world.token)
    link = docked_link(cloud, world, tmp_path, p.FlowMode.METADATA)
    send(link, [vm("ok", "archived", figures(9, 9)), vm("bad", "archived", figures(9, 9))])
    got = ids(gql, world)
    ok = gql.data(RESTORE, v=got["ok"]["id"])["restoreVm"]
    bad = gql.data(RESTORE, v=got["bad"]["id"])["restoreVm"]
    settings = Settings(
        database_url=pg_url,
        data_dir=tmp_path,
        public_url="https://cloud.test",
        secret_key="x" * 40,
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
    )
    with pg.transaction() as session:
        email = session.get(User, world.user_id).email  # type: ignore[union-attr]

    def mine() -> list[Any]:  # the session's cloud is shared: other tests' restores end too
        return [m for m in smtp.messages if m["To"] == email]

    svc = build_services(settings, SystemClock())
    try:
        scheduler.run(svc, "vm.restore_mail")
        assert mine() == []  # nothing ended yet
        finish(link, ok, p.JobEventKind.SUCCEEDED, "restored")
        finish(link, bad, p.JobEventKind.FAILED, "hardware_mismatch")
        assert scheduler.run(svc, "vm.restore_mail")["sent"] >= 2
        scheduler.run(svc, "vm.restore_mail")
    finally:
        svc.db.dispose()
    mails = {m["Subject"]: m for m in mine()}
    assert len(mine()) == 2
    assert set(mails) == {"VM ok is restored", "VM bad could not be restored"}
    assert "hardware_mismatch" in mails["VM bad could not be restored"].get_content()
    assert "was restored" in mails["VM ok is restored"].get_content()
    # a restarted cloud (new services) finds the marks and sends nothing again
    again = build_services(settings, SystemClock())
    try:
        scheduler.run(again, "vm.restore_mail")
    finally:
        again.db.dispose()
    assert len(mine()) == 2


def test_inventory_life_fields_on_both_databases(db: Database) -> None:
    """The new columns through the ingest, on SQLite and PostgreSQL."""
    from dockyard.agent import keys
    from dockyard.cloud.domain import enrolment

    from ..factories import enrolment_secret

    world = make_world(db)
    key = Path(f"/tmp/archcloud-{uuid.uuid4().hex}.key")
    with system(db, world.tenant_id) as ctx:
        agent = enrolment.enroll(
            ctx,
            p.EnrollRequest(
                token=enrolment_secret(world),
                public_key=keys.public_b64(keys.generate(key)),
                host=p.HostFacts(hostname="h"),
                max_flow=p.FlowMode.METADATA,
            ),
        )
        agent_id = agent.id
    key.unlink()
    with system(db, world.tenant_id) as ctx:
        metadata.accept(
            ctx,
            agent_id,
            p.MetadataBatch(
                batch_id=uuid.uuid4(),
                module="vm",
                kind="vm.inventory",
                records=[vm("a", "archived", figures(7 << 30, 1 << 30, restores=3))],
            ),
            100,
        )
    with system(db, world.tenant_id) as ctx:
        row = ctx.session.scalar(select(VmSighting).where(VmSighting.agent_id == agent_id))
        assert row is not None
        assert (row.life_state, row.size_before, row.stored_bytes, row.restore_count) == (
            "archived",
            7 << 30,
            1 << 30,
            3,
        )
        assert row.archived_at == ARCHIVED_AT


def test_a_life_state_keeps_the_time_it_began_across_sightings(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    """What the dashboard's energy reclaimed counts from: the first sighting of a state, not
    the newest (every inventory sends each VM again)."""
    from sqlalchemy import select

    from dockyard.cloud.store.models import VmSighting

    world = make_world(pg, plan="standard")
    link = docked_link(cloud, world, tmp_path, p.FlowMode.METADATA)
    t0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)

    def at(hours: int, state: str, archive: dict[str, Any] | None = None) -> None:
        send(link, [vm("kept", state, archive, seen_at=(t0 + timedelta(hours=hours)).isoformat())])

    def since() -> datetime | None:
        with system(pg, world.tenant_id) as ctx:
            row = ctx.session.scalars(select(VmSighting).where(VmSighting.name == "kept")).one()
            return row.life_since

    at(0, "running")
    assert since() == t0
    at(5, "off")
    assert since() == t0 + timedelta(hours=5)
    at(9, "off")  # the same state again: it began when it began
    assert since() == t0 + timedelta(hours=5)
    at(30, "archived", figures(1 << 30, 1 << 28))
    assert since() == t0 + timedelta(hours=30)
