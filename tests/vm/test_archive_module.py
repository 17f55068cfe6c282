"""The archive feature inside the VM module, on vcsim: rules, the second period, keys, the
post-restore actions (power on, a signed webhook received by a real HTTP server)."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dockyard.agent.clock import ManualClock
from dockyard.agent.modules.vm import VmModule, module_at
from dockyard.agent.modules.vm.archive import ArchiveFailed
from dockyard.agent.modules.vm.archiving import SIGNATURE_HEADER, TIMESTAMP_HEADER
from dockyard.agent.modules.vm.datastore import DatastorePath
from dockyard.agent.modules.vm.drivers import open_driver
from dockyard.agent.modules.vm.drivers.base import DriverError
from dockyard.agent.modules.vm.life import LifeBook
from dockyard.agent.modules.vm.vmfiles.vsphere import VsphereFiles
from dockyard.agent.protocol import CommandEntry, FlowMode, MetadataBatch
from dockyard.agent.protocol.vm import LifeState, PowerAction
from dockyard.agent.vault.backends import LocalBackend
from dockyard.agent.vault.repository import Repository
from dockyard.cloud.store.db import Database

from ..peers.cutter import Cutter
from ..peers.vsphere_sim import Vcsim
from ..procs import Agent, Cloud
from ..vault.conftest import FAST, PASS, SMALL, vm_like
from .reports_check import archive_and_restore_reach_graphql, docked

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def sim() -> Iterator[Vcsim]:
    server = Vcsim(host=1, vm=7, ds=1).start()
    try:
        yield server
    finally:
        server.stop()


class _Hooks(http.server.BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hooks() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    _Hooks.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/restored", _Hooks.received
    finally:
        server.shutdown()


def _module(
    tmp_path: Path, sim: Vcsim, policy: dict[str, Any], port: int | None = None
) -> VmModule:
    """The module with a repository, its passphrase and the vcsim endpoint (through
    `port`, a cutter in front of vcsim, when given)."""
    repo = tmp_path / "repo"
    Repository.init(LocalBackend(repo), PASS, params=SMALL, pack_bytes=1 << 20, cost=FAST)
    Repository.open(LocalBackend(repo), passphrase=PASS).add_recovery_key()
    secret = tmp_path / "archive.pass"
    secret.write_text(PASS + "\n")
    secret.chmod(0o600)
    module = module_at(tmp_path / "vm", ManualClock(START))
    config = sim.config(port=port) if port else sim.config()
    module.endpoints.add("vc", {"kind": "vsphere", **config})
    module.set_local_policy(
        {"archive": {"storage": {"kind": "directory", "path": str(repo)}}, **policy}
    )
    module.update_settings(archive_passphrase_file=str(secret))
    return module


def _fill(module: VmModule, native_id: str) -> dict[str, bytes]:
    driver = module.driver("vc")
    vm = next(v for v in driver.discover().vms if v.native_id == native_id)
    driver.power(vm, PowerAction.POWER_OFF)
    files = VsphereFiles(driver)  # type: ignore[arg-type]
    out = {}
    for n, f in enumerate(files.files(vm)[0]):
        data = vm_like(1_500_000, n + 3) if f.role == "disk" else b"x = 1\n" * 40
        files.ds.write(DatastorePath.parse(f.source), "DC0", io.BytesIO(data), len(data))
        out[f.name] = data
    files.close()
    return out


def test_archiving_is_a_docked_feature_and_the_second_period_makes_a_vm_due(
    sim: Vcsim, tmp_path: Path
) -> None:
    module = _module(tmp_path, sim, {"off_days": 30})
    vm = module.driver("vc").discover().vms[0]
    _fill(module, vm.native_id)
    module.discover(module.clock())
    service = module.archives
    with pytest.raises(ArchiveFailed) as locked:
        service.archive("vc", vm.native_id)
    assert locked.value.code == "feature_locked"
    assert service.due(module.clock()) == []

    module.set_features(frozenset({"archive"}))
    clock: ManualClock = module.clock  # type: ignore[assignment]
    clock.advance(timedelta(days=29))
    assert [d.vm.vm.native_id for d in service.due(module.clock())] == []
    clock.advance(timedelta(days=2))
    due = service.due(module.clock())
    assert vm.native_id in [d.vm.vm.native_id for d in due]
    assert "off for 31 days" in next(d.why for d in due if d.vm.vm.native_id == vm.native_id)

    module.store.add_never_act("vc", vm.name, "kept by hand", module.clock())
    assert vm.native_id not in [d.vm.vm.native_id for d in service.due(module.clock())]
    with pytest.raises(ArchiveFailed) as refused:
        service.archive("vc", vm.native_id)
    assert refused.value.code == "refused_by_safety_net"
    module.close()


def test_never_and_size_rules_hold_and_a_missing_key_is_a_clear_error(
    sim: Vcsim, tmp_path: Path
) -> None:
    module = _module(tmp_path, sim, {"off_days": 1})
    module.set_local_policy(
        {
            "off_days": 1,
            "archive": {
                "never": True,
                "storage": {"kind": "directory", "path": str(tmp_path / "repo")},
            },
        }
    )
    module.set_features(frozenset({"archive"}))
    vm = module.driver("vc").discover().vms[1]
    _fill(module, vm.native_id)
    module.discover(module.clock())
    module.clock.advance(timedelta(days=5))  # type: ignore[attr-defined]
    service = module.archives
    assert service.due(module.clock()) == []
    module.set_local_policy(
        {
            "off_days": 1,
            "archive": {
                "min_vm_gb": 50,
                "storage": {"kind": "directory", "path": str(tmp_path / "repo")},
            },
        }
    )
    with pytest.raises(ArchiveFailed, match="under the rule's 50") as small:
        service.archive("vc", vm.native_id)
    assert small.value.code == "refused_by_safety_net"
    module.update_settings(archive_passphrase_file=None)
    module.set_local_policy(
        {"archive": {"storage": {"kind": "directory", "path": str(tmp_path / "repo")}}}
    )
    with pytest.raises(ArchiveFailed, match="archive_passphrase_file") as keyless:
        service.archive("vc", vm.native_id)
    assert keyless.value.code == "no_storage"
    module.close()


def test_restore_powers_the_vm_on_and_calls_a_signed_webhook(
    sim: Vcsim, tmp_path: Path, hooks: tuple[str, list[tuple[dict[str, str], bytes]]]
) -> None:
    url, received = hooks
    module = _module(tmp_path, sim, {})
    module.set_local_policy(
        {
            "archive": {
                "storage": {"kind": "directory", "path": str(tmp_path / "repo")},
                "post_restore": [{"kind": "power_on"}, {"kind": "webhook", "url": url}],
            }
        }
    )
    module.set_features(frozenset({"archive"}))
    vm = module.driver("vc").discover().vms[2]
    before = _fill(module, vm.native_id)
    module.discover(module.clock())
    idle = {"state": "idle", "at": START.isoformat(), "window": [], "signals": [], "reasons": []}
    module.store.set_evaluations([("vc", vm.native_id, None, json.dumps(idle))])
    service = module.archives
    progress: list[tuple[float, str]] = []
    record = service.archive("vc", vm.native_id, lambda f, d: progress.append((f, d)))
    assert record.size_before == sum(len(b) for b in before.values())
    assert progress[-1][0] == 1.0
    with pytest.raises(DriverError, match="restore it first") as locked:
        module.lifecycle.power(
            module.policy(), "vc", vm.native_id, PowerAction.POWER_ON, module.clock(), "cloud"
        )
    assert locked.value.code == "vm_archived"

    done = service.restore("vc", vm.native_id, requested_by="alice@example.com")
    assert done == ["powered on", "webhook answered 204"]
    assert module.driver("vc").discover().vms[2].power_state == "on"
    # The idle verdict from before the archive is gone and the first period starts anew:
    # the VM asked back is running, not found idle again on the days it spent archived.
    again = module.store.vm("vc", vm.native_id)
    assert again is not None
    assert again.quiet_from == module.clock()
    assert again.evaluation is None
    assert LifeBook(module.store).of("vc", vm.native_id, "on", again.evaluation)[0] == (
        LifeState.RUNNING
    )
    life = service.archiver.journal.life("vc", vm.native_id)
    assert life is not None
    assert life[0] == LifeState.RUNNING
    assert life[2] is not None
    assert life[2].restore_count == 1
    ((headers, body),) = received
    stamp = headers[TIMESTAMP_HEADER]
    want = hmac.new(service.webhook_secret(), stamp.encode() + b"." + body, hashlib.sha256)
    assert headers[SIGNATURE_HEADER] == "sha256=" + want.hexdigest()
    assert json.loads(body)["requested_by"] == "alice@example.com"
    module.close()


def test_a_wiped_agent_restores_an_archived_vm_with_the_recovery_key(
    sim: Vcsim, tmp_path: Path
) -> None:
    """A new machine of the same tenant: no journal, no passphrase, only the stub on the
    datastore and the repository's recovery key; `dockyard-agent vm restore` brings the VM
    back byte for byte."""
    repo = tmp_path / "repo"
    module = _module(tmp_path, sim, {})
    recovery = Repository.open(LocalBackend(repo), passphrase=PASS).add_recovery_key()
    module.set_features(frozenset({"archive"}))
    vm = module.driver("vc").discover().vms[3]
    before = _fill(module, vm.native_id)
    module.discover(module.clock())
    module.archives.archive("vc", vm.native_id)
    module.close()

    key = tmp_path / "recovery.key"
    key.write_text(recovery + "\n")
    key.chmod(0o600)
    policy = tmp_path / "policy.json"
    policy.write_text(
        json.dumps({"archive": {"storage": {"kind": "directory", "path": str(repo)}}})
    )
    password = tmp_path / "vc.pass"
    password.write_text(str(sim.config()["password"]))
    agent = Agent(tmp_path / "new-machine")
    agent.cli(
        "vm",
        "endpoint",
        "add",
        "vc",
        "--kind",
        "vsphere",
        "--host",
        sim.host,
        "--port",
        str(sim.port),
        "--user",
        str(sim.config()["user"]),
        "--password-file",
        str(password),
        "--insecure",
    )
    agent.cli("vm", "policy", "set", str(policy))
    agent.cli("vm", "discover")
    no_key = agent.cli("vm", "restore", vm.name, check=False)
    assert no_key.returncode == 1
    assert "archive-key" in no_key.stderr
    assert "Traceback" not in no_key.stderr
    done = agent.cli("vm", "restore", vm.name, "--recovery-key-file", str(key), check=False)
    assert done.returncode == 0, done.stderr
    assert "restored: powered on" in done.stdout
    assert "100.0%" in done.stderr

    driver = open_driver("vc", {"kind": "vsphere", **sim.config()})
    files = VsphereFiles(driver)  # type: ignore[arg-type]
    back = {}
    for f in files.files(vm)[0]:
        with files.reader(f) as stream:
            back[f.name] = stream.read()
    # Powered on after the restore, the VM has already written to its log.
    assert back.pop("vmware.log").startswith(before.pop("vmware.log"))
    assert back == before
    assert files.read_stub(vm) is None
    files.close()
    driver.close()


def test_the_running_module_archives_on_its_worker_round_and_reports_the_life_state(
    sim: Vcsim, tmp_path: Path
) -> None:
    """The module as the agent runs it: `vm.archive`/`vm.restore` among its handlers, its
    worker round archiving a VM due by the second period only once `archive` is unlocked,
    and the inventory it sends up saying archived, with the archive's figures."""
    module = _module(tmp_path, sim, {"off_days": 30})
    sent: list[MetadataBatch] = []
    module.ctx.flow_mode = lambda: FlowMode.METADATA
    module.ctx.upload = sent.append
    assert {"vm.archive", "vm.restore"} <= set(module.handlers())
    vm = module.driver("vc").discover().vms[4]
    _fill(module, vm.native_id)
    clock: ManualClock = module.clock  # type: ignore[assignment]
    module.step()
    clock.advance(timedelta(days=31))
    module.step()  # locked: the module stops at shutdown
    assert module.archives.archiver.journal.life("vc", vm.native_id) is None

    module.set_features(frozenset({"archive"}))
    journal = module.archives.archiver.journal
    for _ in range(5):  # VMs other tests left off are due too: one archive a round
        clock.advance(timedelta(hours=2))
        before = len(journal.lives())
        module.step()
        assert len(journal.lives()) - before <= 1
        if journal.life("vc", vm.native_id) is not None:
            break
    records = {
        r["native_id"]: r for batch in sent if batch.kind == "vm.inventory" for r in batch.records
    }
    archived = records[vm.native_id]
    assert archived["life_state"] == LifeState.ARCHIVED
    assert archived["archive"]["size_before"] > 0
    assert module.reconcile(_command("vm.archive", vm.native_id)), (
        "a crash after the archive finished: the job happened"
    )

    outcome = module.handlers()["vm.restore"](_command("vm.restore", vm.native_id))
    assert outcome.detail is not None
    assert "restored" in outcome.detail
    after = {r["native_id"]: r for r in module.records(module.clock())}
    assert after[vm.native_id]["life_state"] == LifeState.RUNNING  # restored and powered on
    module.close()


def _wait_for(check: Any, what: str, limit_s: float = 60.0) -> None:
    """Until `check()` holds; the limit is far past a round's pause, so a loaded machine
    only waits longer (the test asserts the outcome, never the time it took)."""
    deadline = time.monotonic() + limit_s
    while not check():
        assert time.monotonic() < deadline, f"{what}: not seen within {limit_s} s"
        time.sleep(0.1)


def test_the_worker_round_lifts_a_fence_left_at_unfencing_across_an_agent_restart(
    sim: Vcsim, tmp_path: Path
) -> None:
    """The path as the agent runs it, not `Archiver.settle` called by hand: the module's
    worker round archives a VM due by the second period through an endpoint that drops
    mid-download, so the roll back leaves the fence journalled at `unfencing`; the agent
    stops, and its next life (a new module over the same state directory, nothing kept in
    memory) rounds while vCenter is still away (still fenced, still journalled), then,
    vCenter back, its worker thread's own round lifts the fence."""
    cutter = Cutter(sim.host, sim.port)
    module = _module(tmp_path, sim, {"off_days": 30}, port=cutter.port)
    module.update_settings(worker_pause_s=0.2)
    module.set_features(frozenset({"archive"}))
    vm = module.driver("vc").discover().vms[5]
    before = _fill(module, vm.native_id)
    clock: ManualClock = module.clock  # type: ignore[assignment]
    module.discover(clock())  # seen off: its second period starts
    for other in module.store.vms("vc"):  # other tests' VMs, off too, are not this one's
        if other.vm.native_id != vm.native_id:
            module.store.add_never_act("vc", other.vm.name, "another test's VM", clock())
    clock.advance(timedelta(days=31))
    module.discover(clock())
    module.collect(clock())
    module.run_lifecycle(clock())  # what else the round does at this moment is done
    driver = open_driver("vc", {"kind": "vsphere", **sim.config()})  # around the cutter
    files = VsphereFiles(driver)  # type: ignore[arg-type]
    restarted: VmModule | None = None
    try:
        cutter.cut_after(1_000_000)  # inside the VM's first 1.5 MB disk
        module.round()
        assert cutter.cuts == 1
        job = module.archives.archiver.journal.job("vc", vm.native_id)
        assert job is not None
        assert job.step == "unfencing"
        life = module.archives.archiver.journal.life("vc", vm.native_id)
        assert life is not None
        assert life[0] == LifeState.ARCHIVE_FAILED
        assert "endpoint_unreachable" in str(life[1])
        assert files.fenced(vm)
        assert files.read_stub(vm) is None
        module.close()  # the agent stops with the fence still owed

        restarted = module_at(tmp_path / "vm", clock)
        restarted.set_features(frozenset({"archive"}))
        journal = restarted.archives.archiver.journal
        clock.advance(timedelta(minutes=5))
        restarted.round()  # vCenter still away: nothing changes, nothing is forgotten
        assert files.fenced(vm)
        job = journal.job("vc", vm.native_id)
        assert job is not None
        assert job.step == "unfencing"

        cutter.mend()
        restarted.tick()  # the runner's tick starts the module's worker thread
        _wait_for(lambda: journal.job("vc", vm.native_id) is None, "the fence lifted")
        restarted.stop_worker()
        assert not files.fenced(vm)
        assert files.read_stub(vm) is None
        back = {}
        for f in files.files(vm)[0]:
            with files.reader(f) as stream:
                back[f.name] = stream.read()
        assert back == before
        life = journal.life("vc", vm.native_id)
        assert life is not None
        assert life[0] == LifeState.ARCHIVE_FAILED  # waits for a person, whole where it was
        repo = Repository.open(LocalBackend(tmp_path / "repo"), passphrase=PASS)
        assert not repo.pins()
    finally:
        if restarted is not None:
            restarted.close()
        cutter.close()
        files.close()
        driver.close()


def test_a_vsphere_vm_s_archive_figures_reach_graphql(
    sim: Vcsim, cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    """Issue 17 point 9 on vSphere: the date, size before, bytes stored and restore count
    the module sends up are what GraphQL gives, archived and restored."""
    module = _module(tmp_path, sim, {})
    module.set_features(frozenset({"archive"}))
    vm = module.driver("vc").discover().vms[6]
    _fill(module, vm.native_id)
    module.discover(module.clock())
    gql, tenant = docked(module, cloud, pg, tmp_path)
    back, _ = archive_and_restore_reach_graphql(module, gql, tenant, "vc", vm.native_id, vm.name)
    assert [s["nativeId"] for s in back["sightings"]] == [vm.native_id]  # the same VM
    module.close()


def _command(name: str, native_id: str) -> CommandEntry:
    return CommandEntry(
        seq=1,
        command_id=uuid.uuid4(),
        job_id=uuid.uuid4(),
        name=name,
        args={"endpoint": "vc", "native_id": native_id},
        expires_at=START + timedelta(days=400),
        timeout_s=3600,
    )
