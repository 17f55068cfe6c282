"""EC2 archive and restore against moto's server: AMI, EBS snapshots, run-instances.

moto makes an AMI's snapshots at once and answers any credentials; it keeps no IAM policy,
so the fence's tag refuses nothing here, and a start during the archive is what the recheck
must catch. moto's CreateImage snapshots only the root device, whatever the instance has:
that is what proves the completeness check (an instance with a second volume is refused).
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dockyard.agent.modules.vm.archive import ArchiveFailed, Archiver
from dockyard.agent.modules.vm.drivers import open_driver
from dockyard.agent.modules.vm.drivers.base import VmInfo
from dockyard.agent.modules.vm.drivers.ec2 import Ec2Driver
from dockyard.agent.modules.vm.ec2archive import (
    ARCHIVE_POINTS,
    RESTORE_POINTS,
    USER_DATA_NAME,
    Ec2Archiver,
    Waits,
)
from dockyard.agent.modules.vm.ec2files import (
    FENCE_TAG,
    RESTORED_FROM_TAG,
    STUB_PREFIX,
    Ec2Files,
    stub_from_tags,
    tags_of,
)
from dockyard.agent.modules.vm.manifest import MANIFEST_NAME, Manifest
from dockyard.agent.modules.vm.store import VmStore
from dockyard.agent.modules.vm.stub import Stub, stub_key
from dockyard.agent.protocol.vm import ArchiveRules, LifeState
from dockyard.agent.vault.backends import LocalBackend
from dockyard.agent.vault.repository import Repository
from dockyard.cloud.store.db import Database

from ..peers.aws import Moto
from ..procs import Cloud, free_port
from ..vault.conftest import FAST, PASS, SMALL
from .reports_check import archive_and_restore_reach_graphql, archiving_module, docked

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = "ami-12c6146b"
"""Any id does: moto checks AMIs only when told to (and listing its own takes seconds)."""
USER_DATA = b"#!/bin/sh\necho batch > /etc/role\n"
TAGS = {"Name": "batch", "owner": "data@example.com"}


@dataclass
class Lab:
    moto: Moto
    ec2: Any
    files: Ec2Files
    repo: Path
    recovery_key: str
    subnet: str
    group: str

    def launch(self, ip: str | None = None, **extra: Any) -> VmInfo:
        """A stopped instance; its network interface goes with it when it is terminated,
        as AWS's default one does (moto's default keeps its address taken forever)."""
        nic = {"DeviceIndex": 0, "SubnetId": self.subnet, "Groups": [self.group]}
        started = self.ec2.run_instances(
            ImageId=BASE_IMAGE,
            MinCount=1,
            MaxCount=1,
            InstanceType="t3.small",
            NetworkInterfaces=[
                {**nic, "DeleteOnTermination": True, **({"PrivateIpAddress": ip} if ip else {})}
            ],
            KeyName="ops",
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": [{"Key": k, "Value": v} for k, v in TAGS.items()],
                }
            ],
            **extra,
        )
        native_id = started["Instances"][0]["InstanceId"]
        self.ec2.stop_instances(InstanceIds=[native_id])
        return self.files.info(self.files.must(native_id))

    def open_repo(self) -> Repository:
        return Repository.open(LocalBackend(self.repo), passphrase=PASS)

    def engine(self, state: Path) -> Ec2Archiver:
        state.mkdir(exist_ok=True)
        archiver = Archiver(VmStore(state / "vm.sqlite"), state, lambda: datetime.now(UTC))
        return Ec2Archiver(archiver, Waits(poll_s=0.05))

    def image(self, native_id: str) -> dict[str, Any] | None:
        found = self.files.images_of(native_id)
        return found[0] if found else None

    def live(self, native_id: str) -> bool:
        return self.files.instance(native_id) is not None


@pytest.fixture(scope="module")
def network(moto: Moto) -> tuple[Any, Ec2Files, str, str]:
    """One reset and one network for the module (moto takes seconds to set up a region
    after each reset); every test has instances of its own."""
    moto.reset()
    ec2 = moto.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.8.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc)["GroupId"]
    ec2.create_key_pair(KeyName="ops")
    driver = open_driver("aws", moto.config())
    assert isinstance(driver, Ec2Driver)
    return ec2, Ec2Files(driver), subnet, group


@pytest.fixture
def lab(moto: Moto, network: tuple[Any, Ec2Files, str, str], tmp_path: Path) -> Lab:
    ec2, files, subnet, group = network
    repo = tmp_path / "repo"
    Repository.init(LocalBackend(repo), PASS, params=SMALL, pack_bytes=1 << 20, cost=FAST)
    recovery = Repository.open(LocalBackend(repo), passphrase=PASS).add_recovery_key()
    return Lab(moto, ec2, files, repo, recovery, subnet, group)


def _archived_whole(lab: Lab, native_id: str) -> bool:
    """The AMI with every snapshot, and the configuration the vault holds for it."""
    image = lab.image(native_id)
    if image is None or image["State"] != "available":
        return False
    snaps = [m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"] if "Ebs" in m]
    described = lab.ec2.describe_snapshots(SnapshotIds=snaps)["Snapshots"]
    if not snaps or any(s["State"] != "completed" for s in described):
        return False
    repo = lab.open_repo()
    for snapshot in repo.snapshots():
        if snapshot.meta.get("vm") == native_id:
            sink = io.BytesIO()
            repo.restore_stream(snapshot.id, MANIFEST_NAME, sink)
            if Manifest.from_bytes(sink.getvalue()).hardware["image"]["ami"] == image["ImageId"]:
                return True
    return False


def test_archive_then_restore_started_with_its_configuration(lab: Lab, tmp_path: Path) -> None:
    vm = lab.launch("10.8.1.20", UserData=USER_DATA.decode())
    engine = lab.engine(tmp_path / "state")
    steps: list[str] = []
    record = engine.archive(
        "aws", vm, lab.files, ArchiveRules(), lab.open_repo, lambda f, d: steps.append(d)
    )

    assert not lab.live(vm.native_id)  # terminated
    image = lab.image(vm.native_id)
    assert image is not None
    tags = tags_of(image)
    assert tags[FENCE_TAG] == "archived"
    repo = lab.open_repo()
    stub = Stub.loads(stub_from_tags(tags) or b"")
    stub.verify(stub_key(repo.keys.master), repo.id)
    assert stub.snapshot == record.snapshot
    assert stub.snapshot in repo.pins()
    assert _archived_whole(lab, vm.native_id)
    held = {f.path for f in repo.snapshot(stub.snapshot).files}
    assert held == {MANIFEST_NAME, USER_DATA_NAME}  # user data beside the manifest, not in it
    manifest = io.BytesIO()
    repo.restore_stream(stub.snapshot, MANIFEST_NAME, manifest)
    assert base64.b64encode(USER_DATA) not in manifest.getvalue()  # nor in the journal's copy
    life = engine.journal.life("aws", vm.native_id)
    assert life is not None
    assert life[0] == LifeState.ARCHIVED
    assert record.size_before == 8 << 30
    assert any("verified" in s for s in steps)
    listed = {v.native_id: v for v in lab.files.driver.discover().vms}
    assert listed[vm.native_id].power_state == "off"  # the AMI stands for it in the inventory

    again = lab.files.archived(vm.native_id)
    back = engine.restore("aws", again, lab.files, lab.open_repo, leave_on=True)
    assert back.native_id != vm.native_id
    instance = lab.files.must(back.native_id)
    assert instance["State"]["Name"] == "running"
    assert instance["InstanceType"] == "t3.small"
    assert instance["SubnetId"] == lab.subnet
    assert lab.files.config(instance)["security_groups"] == [lab.group]
    assert instance["KeyName"] == "ops"
    assert instance["PrivateIpAddress"] == "10.8.1.20"
    assert base64.b64decode(lab.files.user_data(back.native_id) or "") == USER_DATA
    assert {k: v for k, v in tags_of(instance).items() if k in TAGS} == TAGS
    after = lab.image(vm.native_id)
    assert after is not None
    assert tags_of(after)[FENCE_TAG] == "restored"
    assert not [k for k in tags_of(after) if k.startswith(STUB_PREFIX)]
    moved = engine.journal.life("aws", back.native_id)
    assert moved is not None
    assert moved[0] == LifeState.RUNNING
    assert moved[2] is not None
    assert moved[2].restore_count == 1
    assert stub.snapshot in lab.open_repo().pins()  # kept: released by a retention rule only


def test_a_wiped_agent_restores_with_the_recovery_key_in_the_archived_state(
    lab: Lab, tmp_path: Path
) -> None:
    vm = lab.launch()
    lab.engine(tmp_path / "old").archive("aws", vm, lab.files, ArchiveRules(), lab.open_repo)
    key_file = tmp_path / "recovery"
    key_file.write_text(lab.recovery_key)

    def by_recovery_key() -> Repository:
        return Repository.open(LocalBackend(lab.repo), recovery_key=key_file.read_text())

    fresh = lab.engine(tmp_path / "new")  # nothing of the old agent
    archived = lab.files.archived(vm.native_id)  # found by asking EC2
    back = fresh.restore("aws", archived, lab.files, by_recovery_key)
    instance = lab.files.must(back.native_id)
    assert instance["State"]["Name"] == "stopped"  # as it was archived
    assert {k: v for k, v in tags_of(instance).items() if k in TAGS} == TAGS
    with pytest.raises(ArchiveFailed) as again:
        fresh.restore("aws", archived, lab.files, by_recovery_key)
    assert again.value.code == "not_archived"  # the stub is gone: restored once only


def test_a_tampered_stub_is_a_clear_error_and_launches_nothing(lab: Lab, tmp_path: Path) -> None:
    vm = lab.launch()
    engine = lab.engine(tmp_path / "state")
    engine.archive("aws", vm, lab.files, ArchiveRules(), lab.open_repo)
    image = lab.image(vm.native_id)
    assert image is not None
    lab.files.set_tags(image["ImageId"], {f"{STUB_PREFIX}vm_name": "someone-else"})
    archived = lab.files.archived(vm.native_id)
    with pytest.raises(ArchiveFailed) as failed:
        engine.restore("aws", archived, lab.files, lab.open_repo)
    assert failed.value.code == "stub_tampered"
    assert "MAC" in str(failed.value)
    assert not lab.files.tagged(RESTORED_FROM_TAG, vm.native_id)
    life = engine.journal.life("aws", vm.native_id)
    assert life is not None
    assert life[0] == LifeState.RESTORE_FAILED
    lab.files.drop_tags(image["ImageId"], [f"{STUB_PREFIX}mac"])
    with pytest.raises(ArchiveFailed) as truncated:
        engine.restore("aws", archived, lab.files, lab.open_repo)
    assert truncated.value.code == "stub_tampered"


def test_an_instance_started_before_the_terminate_rolls_back_and_nothing_is_deleted(
    lab: Lab, tmp_path: Path
) -> None:
    vm = lab.launch()
    engine = lab.engine(tmp_path / "state")
    made: list[str] = []

    def start_behind_our_back(fraction: float, detail: str) -> None:
        image = lab.image(vm.native_id)
        if image:
            made.extend(m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"])
        if "verified" in detail:
            lab.ec2.start_instances(InstanceIds=[vm.native_id])

    with pytest.raises(ArchiveFailed) as failed:
        engine.archive("aws", vm, lab.files, ArchiveRules(), lab.open_repo, start_behind_our_back)
    assert failed.value.code == "vm_changed"
    instance = lab.files.must(vm.native_id)  # still there, whole, and running
    assert instance["State"]["Name"] == "running"
    assert FENCE_TAG not in tags_of(instance)
    assert not lab.files.protected(vm.native_id)
    assert made
    assert lab.image(vm.native_id) is None  # the AMI deregistered
    gone = lab.ec2.describe_snapshots(Filters=[{"Name": "snapshot-id", "Values": made}])
    assert not gone["Snapshots"]  # and its snapshots deleted
    assert not lab.open_repo().pins()
    life = engine.journal.life("aws", vm.native_id)
    assert life is not None
    assert life[0] == LifeState.ARCHIVE_FAILED


def test_an_image_missing_a_volume_is_refused_before_anything_is_deleted(
    lab: Lab, tmp_path: Path
) -> None:
    """moto's AMI holds the root device only: a second volume has no snapshot."""
    vm = lab.launch(
        BlockDeviceMappings=[
            {"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 8}},
            {"DeviceName": "/dev/sdb", "Ebs": {"VolumeSize": 3}},
        ]
    )
    engine = lab.engine(tmp_path / "state")
    with pytest.raises(ArchiveFailed) as failed:
        engine.archive("aws", vm, lab.files, ArchiveRules(), lab.open_repo)
    assert failed.value.code == "image_incomplete"
    assert "/dev/sdb" in str(failed.value)
    assert lab.live(vm.native_id)
    assert lab.image(vm.native_id) is None


def test_a_running_instance_is_refused_and_left_untouched(lab: Lab, tmp_path: Path) -> None:
    vm = lab.launch()
    lab.ec2.start_instances(InstanceIds=[vm.native_id])
    lab.ec2.modify_instance_attribute(
        InstanceId=vm.native_id, DisableApiTermination={"Value": True}
    )
    with pytest.raises(ArchiveFailed) as failed:
        lab.engine(tmp_path / "s").archive("aws", vm, lab.files, ArchiveRules(), lab.open_repo)
    assert failed.value.code == "invalid_power_state"
    assert lab.files.protected(vm.native_id)  # the owner's protection stays as it was


def test_a_repository_with_one_key_slot_refuses_before_the_fence(lab: Lab, tmp_path: Path) -> None:
    single = tmp_path / "single"
    Repository.init(LocalBackend(single), PASS, params=SMALL, pack_bytes=1 << 20, cost=FAST)
    vm = lab.launch()
    with pytest.raises(ArchiveFailed) as failed:
        lab.engine(tmp_path / "s").archive(
            "aws",
            vm,
            lab.files,
            ArchiveRules(),
            lambda: Repository.open(LocalBackend(single), passphrase=PASS),
        )
    assert failed.value.code == "single_key_slot"
    assert not lab.files.fenced(vm)
    assert FENCE_TAG not in tags_of(lab.files.must(vm.native_id))
    assert lab.image(vm.native_id) is None


def test_ec2_silent_at_the_roll_back_leaves_the_fence_journalled_and_settle_lifts_it(
    lab: Lab, tmp_path: Path
) -> None:
    """EC2 stops answering after the verify (a dead port, the real connection refused):
    the recheck fails, the roll back cannot lift the fence, the job stays at `unfencing`
    and the file engine's `settle` lifts it through `Ec2Files.unfence` once EC2 answers."""
    vm = lab.launch()
    engine = lab.engine(tmp_path / "state")
    files = Ec2Files(lab.files.driver)
    dead = open_driver(
        "aws",
        {**lab.moto.config(), "endpoint_url": f"http://127.0.0.1:{free_port()}", "timeout_s": 1},
    )
    assert isinstance(dead, Ec2Driver)
    live = files.ec2

    def cut(fraction: float, detail: str) -> None:
        if "verified" in detail:
            files.ec2 = dead.ec2

    with pytest.raises(ArchiveFailed) as failed:
        engine.archive("aws", vm, files, ArchiveRules(), lab.open_repo, cut)
    assert failed.value.code == "endpoint_unreachable"
    assert lab.live(vm.native_id)  # nothing terminated
    assert lab.files.fenced(vm)  # and, EC2 being silent, still fenced
    (job,) = engine.files_engine.unsettled()
    life = engine.journal.life("aws", vm.native_id)
    assert life is not None
    assert "still fenced" in (life[1] or "")

    files.ec2 = live
    engine.files_engine.settle(vm, files, job)
    assert not lab.files.fenced(vm)
    assert not lab.files.protected(vm.native_id)
    assert engine.journal.job("aws", vm.native_id) is None
    (stale,) = lab.files.images_of(vm.native_id)  # the AMI EC2 was too silent to drop
    engine.archive("aws", vm, files, ArchiveRules(), lab.open_repo)
    (image,) = lab.files.images_of(vm.native_id)
    assert image["ImageId"] != stale["ImageId"]  # an archive is never an earlier job's AMI


# --- kill -9 at every step -----------------------------------------------------------------

CASES = [("archive", p) for p in ARCHIVE_POINTS] + [("restore", p) for p in RESTORE_POINTS]


def _child(mode: str, lab: Lab, native_id: str, state: Path, crash: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "DOCKYARD_CRASH_AT"}
    if crash:
        env["DOCKYARD_CRASH_AT"] = crash
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.vm.ec2_archive_child",
            mode,
            json.dumps(lab.moto.config()),
            native_id,
            str(lab.repo),
            str(state),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, -signal.SIGKILL), done.stderr[-3000:]
    return done.returncode


@pytest.mark.parametrize(("mode", "point"), CASES)
def test_a_kill_at_every_step_leaves_the_instance_whole_and_the_next_run_finishes(
    lab: Lab, tmp_path: Path, mode: str, point: str
) -> None:
    """The killed run is a process of its own; the run after it, here, finds the journal
    it left in the same state directory, as a restarted agent would."""
    vm = lab.launch()
    state = tmp_path / "state"
    engine = lab.engine(state)
    if mode == "restore":
        engine.archive("aws", vm, lab.files, ArchiveRules(), lab.open_repo)
    assert _child(mode, lab, vm.native_id, state, point) == -signal.SIGKILL, f"{point} not reached"
    job = engine.journal.job("aws", vm.native_id)
    assert job is not None
    assert job.kind == mode  # the journal knows where it stopped

    if mode == "archive":
        here = lab.files.instance(vm.native_id)
        whole_here = here is not None and here["State"]["Name"] == "stopped"
        assert whole_here or _archived_whole(lab, vm.native_id), f"{point}: whole nowhere"
        engine.archive("aws", vm, lab.files, ArchiveRules(), lab.open_repo)
        assert not lab.live(vm.native_id)
        image = lab.image(vm.native_id)
        assert image is not None
        assert tags_of(image)[FENCE_TAG] == "archived"
        assert _archived_whole(lab, vm.native_id)
        assert len(lab.files.images_of(vm.native_id)) == 1  # a resumed run made no second AMI
    else:
        assert _archived_whole(lab, vm.native_id), f"{point}: the archive is not whole"
        engine.restore("aws", vm, lab.files, lab.open_repo)
        restored = lab.files.tagged(RESTORED_FROM_TAG, vm.native_id)
        assert len(restored) == 1  # never a second instance
        assert restored[0]["State"]["Name"] == "stopped"
        image = lab.image(vm.native_id)
        assert image is not None
        assert tags_of(image)[FENCE_TAG] == "restored"
    assert engine.journal.job("aws", vm.native_id) is None


def test_the_vm_module_archives_and_restores_an_instance_through_its_service(
    lab: Lab, tmp_path: Path
) -> None:
    """The module's archive feature picks the EC2 engine for an EC2 endpoint; the archived
    instance stays in its inventory (from the AMI) and comes back started, as the policy's
    post-restore power-on says, with its life row under its new id."""
    vm = lab.launch()
    module = archiving_module(
        tmp_path / "vm", "aws", lab.moto.config(), lab.repo, datetime(2026, 6, 1, 12, tzinfo=UTC)
    )

    record = module.archives.archive("aws", vm.native_id)
    assert record.size_before == 8 << 30
    assert not lab.live(vm.native_id)
    module.discover(module.clock())
    stored = module.store.vm("aws", vm.native_id)
    assert stored is not None
    assert stored.gone_at is None  # the AMI stands for it
    life = module.archives.archiver.journal.life("aws", vm.native_id)
    assert life is not None
    assert life[0] == LifeState.ARCHIVED

    with pytest.raises(ArchiveFailed) as elsewhere:
        module.archives.restore("aws", vm.native_id, datastore="gp3-pool")
    assert elsewhere.value.code == "not_supported"  # EC2 has no datastore to choose
    done = module.archives.restore("aws", vm.native_id)
    assert done == ["powered on"]
    (back,) = lab.files.tagged(RESTORED_FROM_TAG, vm.native_id)
    assert back["State"]["Name"] == "running"
    moved = module.archives.archiver.journal.life("aws", back["InstanceId"])
    assert moved is not None
    assert moved[0] == LifeState.RUNNING
    module.close()


def test_an_instance_s_archive_figures_reach_graphql_and_its_new_id_is_linked_to_the_old(
    lab: Lab, tmp_path: Path, cloud: Cloud, pg: Database
) -> None:
    """Issue 17 point 9 on EC2, through the module and a real cloud on PostgreSQL: the
    figures GraphQL gives are the agent's; after the restore the instance runs under a new
    id, which the agent links to the old (`archive.restored_from`), so GraphQL shows one
    VM holding both sightings (the old gone, the new running), its figures carried on."""
    vm = lab.launch()
    name = f"reported-{vm.native_id}"  # other tests' instances are named batch
    lab.ec2.create_tags(Resources=[vm.native_id], Tags=[{"Key": "Name", "Value": name}])
    module = archiving_module(
        tmp_path / "vm", "aws", lab.moto.config(), lab.repo, datetime(2026, 6, 1, 12, tzinfo=UTC)
    )
    gql, tenant = docked(module, cloud, pg, tmp_path)
    try:
        back, record = archive_and_restore_reach_graphql(
            module, gql, tenant, "aws", vm.native_id, name
        )
    finally:
        module.close()
    assert record.size_before == 8 << 30
    (new,) = lab.files.tagged(RESTORED_FROM_TAG, vm.native_id)
    new_id = str(new["InstanceId"])
    assert new_id != vm.native_id
    assert back["archive"]["restoredFrom"] == vm.native_id
    sightings = {s["nativeId"]: s for s in back["sightings"]}
    assert set(sightings) == {vm.native_id, new_id}
    assert sightings[new_id]["lifeState"] == "RUNNING"
    assert sightings[new_id]["archive"]["restoredFrom"] == vm.native_id
    assert sightings[vm.native_id]["powerState"] == "gone"
    assert sightings[vm.native_id]["lifeState"] == "OFF"  # no longer archived: it came back
