"""What a VM module really sends up after an archive and a restore, read back through the
cloud's GraphQL on PostgreSQL (issue 17 point 9): the module's inventory batches go
through a real docked link (metadata mode) to the real cloud, and the VM's archive date,
size before, bytes stored and restore count are asked of `vms` and `archivedVms`.

Shared by the vSphere, libvirt and EC2 tests, which each drive their own hypervisor."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dockyard.agent import protocol as p
from dockyard.agent.clock import ManualClock
from dockyard.agent.modules.vm import VmModule, module_at
from dockyard.agent.protocol import CommandEntry
from dockyard.agent.protocol.vm import ArchiveRecord
from dockyard.cloud.store.db import Database

from ..factories import Gql, make_world
from ..integration.test_vault_brokered import docked_link
from ..procs import Cloud
from ..vault.conftest import PASS

VMS = """query($t: ID!) { vms(tenantId: $t, first: 500) { ... on VmConnection { edges { node {
  id name lifeState archive { archivedAt sizeBefore storedBytes restoreCount restoredAt
  restoredFrom } sightings { nativeId powerState lifeState lifeReason archive {
  restoreCount restoredFrom } } } } } } }"""
ARCHIVED = """query($t: ID!) { archivedVms(tenantId: $t, first: 50) {
  ... on ArchivedVmConnection { edges { node { name endpoint archive { archivedAt sizeBefore
  storedBytes restoreCount } } } } } }"""


def archiving_module(
    state: Path, endpoint: str, config: dict[str, Any], repo: Path, now: datetime
) -> VmModule:
    """The module with one endpoint, archives going to the repository at `repo` (its
    passphrase in a 0600 file beside the state), `archive` unlocked, and one discovery."""
    secret = state.parent / f"{state.name}.pass"
    secret.write_text(PASS + "\n")
    secret.chmod(0o600)
    module = module_at(state, ManualClock(now))
    module.endpoints.add(endpoint, config)
    module.set_local_policy({"archive": {"storage": {"kind": "directory", "path": str(repo)}}})
    module.update_settings(archive_passphrase_file=str(secret))
    module.set_features(frozenset({"archive"}))
    module.discover(module.clock())
    return module


def docked(module: VmModule, cloud: Cloud, pg: Database, tmp_path: Path) -> tuple[Gql, str]:
    """The module docked in metadata mode: what it uploads goes to the cloud over a real
    link. (GraphQL client, tenant id.)"""
    world = make_world(pg, plan="standard")
    link = docked_link(cloud, world, tmp_path, p.FlowMode.METADATA)
    module.ctx.flow_mode = lambda: p.FlowMode.METADATA
    module.ctx.upload = link.metadata
    return Gql(cloud.url, world.token), str(world.tenant_id)


def command(name: str, endpoint: str, native_id: str) -> CommandEntry:
    return CommandEntry(
        seq=1,
        command_id=uuid.uuid4(),
        job_id=uuid.uuid4(),
        name=name,
        args={"endpoint": endpoint, "native_id": native_id},
        expires_at=datetime.now(UTC) + timedelta(days=1),
        timeout_s=3600,
    )


def vm_named(gql: Gql, tenant: str, name: str) -> dict[str, Any]:
    (found,) = [v for v in gql.nodes(VMS, t=tenant) if v["name"] == name]
    return found


def archive_and_restore_reach_graphql(
    module: VmModule, gql: Gql, tenant: str, endpoint: str, native_id: str, name: str
) -> tuple[dict[str, Any], ArchiveRecord]:
    """Archive then restore through the module's own command handlers (which tell the cloud
    at once); after each, the figures GraphQL gives are the agent's. The VM as GraphQL
    gives it after the restore, and the archive's record."""
    handlers = module.handlers()
    handlers["vm.archive"](command("vm.archive", endpoint, native_id))
    life = module.archives.archiver.journal.life(endpoint, native_id)
    assert life is not None
    record = life[2]
    assert record is not None
    assert record.stored_bytes > 0
    assert record.size_before > 0

    archived = vm_named(gql, tenant, name)
    assert archived["lifeState"] == "ARCHIVED"
    figures = archived["archive"]
    assert datetime.fromisoformat(figures["archivedAt"]) == record.archived_at
    assert figures["sizeBefore"] == record.size_before
    assert figures["storedBytes"] == record.stored_bytes
    assert figures["restoreCount"] == 0
    assert figures["restoredFrom"] is None
    report = [v for v in gql.nodes(ARCHIVED, t=tenant) if v["name"] == name]
    assert [r["archive"]["sizeBefore"] for r in report] == [record.size_before]
    assert report[0]["endpoint"] == endpoint

    handlers["vm.restore"](command("vm.restore", endpoint, native_id))
    back = vm_named(gql, tenant, name)
    assert back["lifeState"] == "RUNNING"  # the policy's post-restore power-on
    assert back["archive"]["restoreCount"] == 1
    assert back["archive"]["restoredAt"] is not None
    assert back["archive"]["sizeBefore"] == record.size_before
    assert not [v for v in gql.nodes(ARCHIVED, t=tenant) if v["name"] == name]
    return back, record
