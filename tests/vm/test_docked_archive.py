"""The archive loop docked, end to end: a real agent (the installed CLI) docked in metadata
mode with a real cloud on PostgreSQL and a vcsim vCenter. `archiveVm` in GraphQL reaches the
agent's `vm.archive`, whose progress shows on the job; the inventory it sends up says
archived with the archive's figures; `restoreVm` brings the files back byte for byte and
the VM on; a second `archiveVm` of an archived VM is refused by the cloud's state rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dockyard.agent.modules.vm import module_at
from dockyard.agent.modules.vm.drivers import open_driver
from dockyard.agent.modules.vm.vmfiles.vsphere import VsphereFiles
from dockyard.agent.vault.backends import LocalBackend
from dockyard.agent.vault.repository import Repository
from dockyard.cloud.store.db import Database

from ..factories import Gql, enrolment_secret, make_world
from ..peers.vsphere_sim import Vcsim
from ..procs import Agent, Cloud, eventually
from ..vault.conftest import FAST, PASS, SMALL
from .test_archive_module import _fill
from .test_cloud_archive import ARCHIVE, RESTORE

VMS = """query($t: ID!) { vms(tenantId: $t) { ... on VmConnection { edges { node {
  id name lifeState archive { sizeBefore storedBytes restoreCount }
  sightings { nativeId powerState } } } } } }"""
JOB = """query($id: ID!) { job(id: $id) { ... on Job { state progress resultCode
  events { edges { node { kind progress detail } } } } } }"""


def _vm(gql: Gql, tenant: str, name: str) -> dict[str, Any] | None:
    return next((v for v in gql.nodes(VMS, t=tenant) if v["name"] == name), None)


def _finished(gql: Gql, job_id: str) -> Any:
    def check() -> dict[str, Any] | None:
        job = gql.data(JOB, id=job_id)["job"]
        return job if job["state"] in ("SUCCEEDED", "FAILED") else None

    return check


@pytest.mark.slow
def test_archive_vm_in_graphql_archives_on_the_agent_and_restore_brings_it_back(
    pg_url: str, pg: Database, tmp_path: Path
) -> None:
    sim = Vcsim(host=1, vm=2, ds=1).start()
    cloud = Cloud(pg_url, tmp_path / "cloud").start()
    agent = Agent(tmp_path / "agent")
    try:
        world = make_world(pg)
        tenant = str(world.tenant_id)
        gql = Gql(cloud.url, world.token)
        repo = tmp_path / "repo"
        Repository.init(LocalBackend(repo), PASS, params=SMALL, pack_bytes=1 << 20, cost=FAST)
        Repository.open(LocalBackend(repo), passphrase=PASS).add_recovery_key()
        secret = tmp_path / "archive.pass"
        secret.write_text(PASS + "\n")
        secret.chmod(0o600)

        agent.dock(cloud.url, enrolment_secret(world), "--max-flow", "metadata")
        password = tmp_path / "vc.pass"
        password.write_text(str(sim.config()["password"]))
        agent.cli(
            "vm", "endpoint", "add", "vc", "--kind", "vsphere", "--host", sim.host,
            "--port", str(sim.port), "--user", str(sim.config()["user"]),
            "--password-file", str(password), "--insecure",
        )  # fmt: skip
        policy = tmp_path / "policy.json"
        policy.write_text(
            json.dumps({"archive": {"storage": {"kind": "directory", "path": str(repo)}}})
        )
        agent.cli("vm", "policy", "set", str(policy))
        module = module_at(agent.state / "modules" / "vm")
        module.update_settings(archive_passphrase_file=str(secret), worker_pause_s=0.2)
        target = module.driver("vc").discover().vms[0]
        before = _fill(module, target.native_id)  # written, then powered off
        module.close()
        agent.start()

        seen = eventually(
            lambda: (v := _vm(gql, tenant, target.name)) and v["lifeState"] == "OFF" and v,
            timeout=60,
            what="the VM, off, in the cloud's inventory",
        )
        ordered = gql.data(ARCHIVE, v=seen["id"])["archiveVm"]
        assert ordered["__typename"] == "Command", ordered
        job = eventually(_finished(gql, ordered["jobId"]), timeout=120, what="the archive job")
        assert job["state"] == "SUCCEEDED", job
        steps = [e["node"]["progress"] for e in job["events"]["edges"] if e["node"]["progress"]]
        assert steps == sorted(steps)
        assert steps[0] < 1.0, "progress showed while the archive ran"
        assert steps[-1] == 1.0

        archived = eventually(
            lambda: (v := _vm(gql, tenant, target.name)) and v["lifeState"] == "ARCHIVED" and v,
            timeout=30,
            what="the inventory to say archived",
        )
        assert archived["archive"]["sizeBefore"] == sum(len(b) for b in before.values())
        assert 0 < archived["archive"]["storedBytes"] < archived["archive"]["sizeBefore"]
        again = gql.data(ARCHIVE, v=seen["id"])["archiveVm"]
        assert again["__typename"] == "VmLifeStateForbids", again

        restored = gql.data(RESTORE, v=seen["id"], d=None)["restoreVm"]
        assert restored["__typename"] == "Command", restored
        job = eventually(_finished(gql, restored["jobId"]), timeout=120, what="the restore job")
        assert job["state"] == "SUCCEEDED", job
        back_on = eventually(
            lambda: (v := _vm(gql, tenant, target.name)) and v["lifeState"] == "RUNNING" and v,
            timeout=30,
            what="the restored VM, on, in the cloud's inventory",
        )
        assert back_on["sightings"][0]["powerState"] == "on"
        assert back_on["archive"]["restoreCount"] == 1

        driver = open_driver("vc", {"kind": "vsphere", **sim.config()})
        files = VsphereFiles(driver)  # type: ignore[arg-type]
        vm = next(v for v in driver.discover().vms if v.native_id == target.native_id)
        back = {}
        for f in files.files(vm)[0]:
            with files.reader(f) as stream:
                back[f.name] = stream.read()
        assert back.pop("vmware.log").startswith(before.pop("vmware.log"))
        assert back == before
        files.close()
        driver.close()
    finally:
        agent.stop()
        cloud.stop()
        sim.stop()
