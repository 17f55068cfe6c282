"""Archive an EC2 instance as an AMI with its EBS snapshots; restore it with run-instances.

EC2 has no files the agent could stream, so the archive is AWS's own copy: an AMI of the
stopped instance, whose EBS snapshots hold its disks. What AWS does not keep with an AMI,
the instance's configuration (type, subnet, security groups, key, private IP, tags, each
volume's size, type and delete-on-termination), goes into the vault as one snapshot holding
the archive's manifest (`MANIFEST_NAME`), pinned like any archive. The stub is the AMI's
tags (`ec2files.stub_tags`): repository, snapshot and manifest hash under a MAC from the
repository's key; the agent's record is the VM's life row. An agent on a new machine with
the repository's recovery key finds the AMI by its tags, checks the stub, reads the
configuration back and restores.

The same rules as the file engine (`archive.py`), step by step in `archive_jobs`:

    archive: begun -> fenced -> imaged -> recorded -> verified -> terminating -> (done)
             (a roll back EC2 does not answer: -> unfencing -> (done), as in archive.py)
    restore: begun -> launching -> launched -> compared -> (done)

The instance is fenced for the whole archive (`Ec2Files.fence` says what EC2 allows). Before
`terminating`, any failure rolls back: the fence is lifted, the AMI deregistered and its
snapshots deleted, the vault snapshot's pin released; the instance is whole where it was.
`verified` means the AMI is available, it has a snapshot for every volume of the instance,
each completed and of the size recorded, the stub on the AMI checks, and the configuration
read back from the repository's storage is the one recorded. Just before the instance is
terminated, it is checked again: still stopped, still fenced, the same volumes. From
`terminating` on, the AMI is the VM and a resumed run goes forward.

A restore launches one instance from the AMI with the recorded configuration (tagged
`RESTORED_FROM_TAG`, so a run resumed after a crash finds it instead of launching another),
compares it with the manifest field by field, and leaves it as it was archived: stopped,
unless the policy's post-restore actions start it at once (`leave_on`). EC2 cannot launch an
instance stopped, so "as archived" is a stop after the launch. Until the comparison passes,
the stub stands and a failure terminates the launched copy. After it, the stub's tags are
removed and the AMI is marked `restored`; the AMI, its snapshots and the vault snapshot are
kept, as the file engine keeps an archive's pin: released only by an explicit retention rule.

Not carried across, and said here so nobody counts on it: an Elastic IP's association and
the public address (AWS gives a new one), placement groups, instance-store volumes (lost at
every stop anyway), and a second network interface (such an instance is refused).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...crashpoints import crashpoint
from ...protocol.vm import ArchiveRecord, ArchiveRules, Identifiers, LifeState
from ...vault.errors import VaultError
from ...vault.repository import Repository, Source
from .archive import (
    ArchiveFailed,
    Archiver,
    Job,
    OpenRepository,
    Report,
    _location,
    _opened,
    _reason,
    _reopened,
    let_go,
)
from .drivers.base import DriverError, VmInfo
from .ec2files import (
    FENCE_TAG,
    GIB,
    INSTANCE_TAG,
    RESTORED_AS_TAG,
    RESTORED_FROM_TAG,
    STUB_PREFIX,
    Ec2Files,
    stub_from_tags,
    stub_tags,
    tags_of,
)
from .manifest import MANIFEST_NAME, ArchiveMismatch, Manifest
from .stub import Stub, StubTampered, stub_key
from .vmfiles import VmFiles

ARCHIVE_POINTS = (
    "ec2_after_fence",
    "ec2_after_image",
    "ec2_after_record",
    "ec2_after_verify",
    "ec2_mid_terminate",
)
RESTORE_POINTS = ("ec2_after_launch", "ec2_after_compare")
USER_DATA_NAME = ".dockyard/ec2-user-data"
"""The instance's user data in the archive's snapshot (base64, as EC2 gives it)."""
_EMPTY = hashlib.sha256(b"").hexdigest()
NOT_COMPARED = ("image", "placement")
"""Manifest fields that are the archive's, not the instance's."""


@dataclass(frozen=True)
class Waits:
    """How long AWS is given to finish an AMI or a state change, and how often it is asked
    (the first ask is at once: moto answers at once, AWS takes minutes for an AMI)."""

    image_s: float = 3 * 3600.0
    state_s: float = 900.0
    poll_s: float = 5.0


class Ec2Archiver:
    """The EC2 engine beside the file engine, sharing its journal, locks and crash points."""

    def __init__(self, files_engine: Archiver, waits: Waits | None = None) -> None:
        self.files_engine = files_engine
        self.journal = files_engine.journal
        self.clock = files_engine.clock
        self.state_dir = files_engine.state_dir
        self.waits = waits or Waits()

    def _crash(self, point: str) -> None:
        crashpoint(point, self.state_dir)

    # --- archive -----------------------------------------------------------------------

    def archive(
        self,
        endpoint: str,
        vm: VmInfo,
        files: VmFiles,
        rules: ArchiveRules,
        open_repo: OpenRepository,
        report: Report | None = None,
    ) -> ArchiveRecord:
        """`rules` is the file engine's; EC2 archives every volume, so only the caller's
        size rules apply to it."""
        ec2 = _ec2(files)
        with self.files_engine.exclusive(endpoint, vm.native_id, "archive"):
            return self._archive(endpoint, vm, ec2, open_repo, report or _quiet)

    def _archive(
        self, endpoint: str, vm: VmInfo, ec2: Ec2Files, open_repo: OpenRepository, report: Report
    ) -> ArchiveRecord:
        job = self.journal.claim(endpoint, vm.native_id, "archive", self.clock())
        if job.step == "unfencing":
            # A roll back that could not reach EC2: finish it, then start afresh.
            self.files_engine._settle(job, vm, ec2)
            job = self.journal.claim(endpoint, vm.native_id, "archive", self.clock())
        try:
            repo = open_repo()
            if job.step in ("begun", "fenced", "imaged"):
                try:
                    repo.require_second_slot()
                except VaultError as e:
                    raise ArchiveFailed("single_key_slot", str(e)) from None
            if job.step == "begun":
                self._begin(job, vm, ec2, report)
            if job.step == "fenced":
                self._image(job, vm, ec2, report)
            if job.step == "imaged":
                self._record(job, vm, ec2, repo, report)
            if job.step == "recorded":
                self._verify(job, ec2, repo, report)
            if job.step == "verified":
                self._recheck(job, vm, ec2)
                self.journal.step(job, "terminating", self.clock())
        except Exception as e:  # before the terminate, any failure rolls back
            failure = self.files_engine._failure(e)
            self._roll_back(job, vm, ec2, open_repo, failure)
            raise failure from None
        try:
            if job.step == "terminating":
                return self._terminate(job, vm, ec2, repo, report)
        except Exception as e:
            # Past the point of no return: the verified AMI is the VM; the next run goes on.
            self.journal.set_life(
                endpoint, vm.native_id, LifeState.ARCHIVING, self.clock(), _reason(e)
            )
            raise self.files_engine._failure(e) from None
        raise ArchiveFailed("invalid_state", f"the archive journal is at {job.step!r}")

    def _begin(self, job: Job, vm: VmInfo, ec2: Ec2Files, report: Report) -> None:
        if ec2.stub_image(vm.native_id) is not None:
            raise ArchiveFailed("already_archived", f"{vm.name} already has an archive AMI")
        state = ec2.power_state(vm)
        if state != "off":
            raise ArchiveFailed(
                "invalid_power_state",
                f"{vm.name} is {state}; only a stopped instance is archived",
            )
        interfaces = ec2.must(vm.native_id).get("NetworkInterfaces", [])
        if len(interfaces) > 1:
            raise ArchiveFailed(
                "not_supported",
                f"{vm.name} has {len(interfaces)} network interfaces; only instances with one "
                "are archived (a restore would not bring the others back)",
            )
        for image in ec2.images_of(vm.native_id):
            if tags_of(image).get(FENCE_TAG) == "archiving":
                # An earlier job's, that its roll back could not drop: of the instance as it
                # was then, never to be taken for this archive's.
                self._drop_image(ec2, image)
        self.journal.set_life(job.endpoint, vm.native_id, LifeState.ARCHIVING, self.clock())
        placement = ec2.fence(vm)
        self.journal.step(job, "fenced", self.clock(), placement=placement)
        report(0.05, f"{vm.name}: fenced (termination protection on, tag {FENCE_TAG})")
        self._crash("ec2_after_fence")

    def _image(self, job: Job, vm: VmInfo, ec2: Ec2Files, report: Report) -> None:
        if ec2.power_state(vm) != "off" or not ec2.fenced(vm):
            raise ArchiveFailed("vm_changed", f"{vm.name} was started or unfenced; not archived")
        left = [i for i in ec2.images_of(vm.native_id) if tags_of(i).get(FENCE_TAG) == "archiving"]
        usable = [i for i in left if i.get("State") in ("pending", "available")]
        for image in left:
            if image not in usable[:1]:
                self._drop_image(ec2, image)  # a crashed run's failed or second image
        if usable:
            ami = str(usable[0]["ImageId"])  # a crashed run's image, made of the same stopped VM
        else:
            made = ec2.call(
                ec2.ec2.create_image,
                InstanceId=vm.native_id,
                Name=f"dockyard-archive-{vm.native_id}-{self.clock():%Y%m%d%H%M%S}",
                Description=f"Dockyard archive of {vm.name} ({vm.native_id})"[:255],
                NoReboot=True,
                TagSpecifications=[
                    {
                        "ResourceType": "image",
                        "Tags": [
                            {"Key": FENCE_TAG, "Value": "archiving"},
                            {"Key": INSTANCE_TAG, "Value": vm.native_id},
                        ],
                    }
                ],
            )
            ami = str(made["ImageId"])
        report(0.1, f"{vm.name}: AMI {ami} being made")
        self._wait_image(ec2, ami)
        self.journal.step(
            job, "imaged", self.clock(), placement={**(job.placement or {}), "image": ami}
        )
        report(0.6, f"{vm.name}: AMI {ami} available")
        self._crash("ec2_after_image")

    def _wait_image(self, ec2: Ec2Files, ami: str) -> dict[str, Any]:
        def state() -> tuple[str, dict[str, Any]]:
            found = self._image_of(ec2, ami)
            return ("gone" if found is None else str(found.get("State"))), found or {}

        bad = {"failed", "invalid", "deregistered", "gone"}
        return self._until(state, {"available"}, bad, self.waits.image_s, f"AMI {ami}")

    def _until(
        self,
        read: Callable[[], tuple[str, dict[str, Any]]],
        wanted: set[str],
        bad: set[str],
        wait_s: float,
        what: str,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + wait_s
        while True:
            state, found = read()
            if state in wanted:
                return found
            if state in bad:
                raise ArchiveFailed("aws_failed", f"{what} is {state}")
            if time.monotonic() > deadline:
                raise ArchiveFailed("aws_timeout", f"{what} is still {state} after {wait_s:.0f} s")
            time.sleep(self.waits.poll_s)

    def _image_of(self, ec2: Ec2Files, ami: str) -> dict[str, Any] | None:
        """The AMI as EC2 describes it; None when EC2 says there is no such AMI (any other
        failure, an endpoint unreachable, is raised as it is)."""
        try:
            answer = ec2.call(ec2.ec2.describe_images, ImageIds=[ami])
        except DriverError as e:
            if "InvalidAMIID" in str(e):
                return None
            raise
        images = answer.get("Images", [])
        return dict(images[0]) if images else None

    def _record(
        self, job: Job, vm: VmInfo, ec2: Ec2Files, repo: Repository, report: Report
    ) -> None:
        assert job.placement
        ami = job.placement["image"]
        instance = ec2.must(vm.native_id)
        config = ec2.config(instance)
        volumes = ec2.volumes(instance)
        image = self._image_of(ec2, ami)
        if image is None:
            raise ArchiveFailed("image_missing", f"AMI {ami} is gone; nothing is deleted")
        snapshots = _snapshots(image)
        missing = [v["device"] for v in volumes if not v["shared"] and v["device"] not in snapshots]
        if missing:
            raise ArchiveFailed(
                "image_incomplete",
                f"AMI {ami} has no snapshot of {', '.join(missing)}; nothing is deleted",
            )
        manifest = Manifest(
            vm.native_id,
            vm.name,
            ec2.hypervisor,
            "off",
            self.clock().isoformat(),
            {
                **config,
                "image": {
                    "ami": ami,
                    "snapshots": snapshots,
                    "volume_ids": {v["device"]: v["volume"] for v in volumes},
                },
                "placement": job.placement,
            },
        )
        body = manifest.to_bytes()
        sources = [Source(MANIFEST_NAME, lambda: _opened(body), len(body))]
        user_data = (ec2.user_data(vm.native_id) or "").encode()
        if hashlib.sha256(user_data).hexdigest() != (config["user_data_sha256"] or _EMPTY):
            raise ArchiveFailed("vm_changed", f"{vm.name}'s user data changed while recorded")
        if user_data:  # beside the manifest, not in it: the journal never holds it
            sources.append(Source(USER_DATA_NAME, lambda: _opened(user_data), len(user_data)))
        snapshot, stats = repo.store(
            sources,
            name=f"vm-archive {vm.name}",
            tags=["vm-archive"],
            meta={"vm": vm.native_id, "endpoint": job.endpoint, "kind": "vm-archive"},
            source=f"vm-archive/{job.endpoint}/{vm.native_id}",
            rescan=True,
        )
        repo.pin(snapshot.id, f"archive of {vm.name} ({job.endpoint}/{vm.native_id})")
        stub = Stub(
            vm_id=vm.native_id,
            vm_name=vm.name,
            hypervisor=ec2.hypervisor,
            repository=repo.id,
            location=_location(repo),
            snapshot=snapshot.id,
            manifest_sha256=manifest.sha256(),
            archived_at=self.clock().isoformat(),
            files=len(snapshots),
            size=sum(int(v["size_gib"]) for v in volumes) * GIB,
        ).signed(stub_key(repo.keys.master))
        ec2.set_tags(ami, stub_tags(stub))
        self.journal.step(
            job,
            "recorded",
            self.clock(),
            snapshot=snapshot.id,
            manifest=manifest,
            stored_bytes=stats.new_bytes_stored,
        )
        report(0.7, f"{vm.name}: configuration recorded in snapshot {snapshot.id[:12]}")
        self._crash("ec2_after_record")

    def _verify(self, job: Job, ec2: Ec2Files, repo: Repository, report: Report) -> None:
        assert job.snapshot
        assert job.manifest
        manifest = job.manifest
        fresh = _reopened(repo)  # what the storage holds, not this run's memory
        sink = io.BytesIO()
        try:
            fresh.reload_index()
            fresh.restore_stream(job.snapshot, MANIFEST_NAME, sink)
        except VaultError as e:
            raise ArchiveMismatch(f"the recorded configuration: {e}; nothing is deleted") from None
        if sink.getvalue() != manifest.to_bytes():
            raise ArchiveMismatch("the configuration read back differs; nothing is deleted")
        self._user_data(fresh, job)  # read back and hashed too
        recorded = manifest.hardware["image"]
        image = self._image_of(ec2, recorded["ami"])
        if image is None or image.get("State") != "available":
            raise ArchiveFailed("image_missing", f"AMI {recorded['ami']} is not available")
        if _snapshots(image) != recorded["snapshots"]:
            raise ArchiveFailed(
                "image_changed", f"AMI {recorded['ami']}'s volumes changed since recorded"
            )
        ids = [s["snapshot"] for s in recorded["snapshots"].values()]
        described = ec2.call(ec2.ec2.describe_snapshots, SnapshotIds=ids).get("Snapshots", [])
        sizes = {s["SnapshotId"]: (s.get("State"), int(s.get("VolumeSize", -1))) for s in described}
        for device, snap in recorded["snapshots"].items():
            if sizes.get(snap["snapshot"]) != ("completed", snap["size_gib"]):
                raise ArchiveFailed(
                    "snapshot_incomplete",
                    f"{device}'s snapshot {snap['snapshot']} is {sizes.get(snap['snapshot'])}, "
                    f"not completed at {snap['size_gib']} GiB; nothing is deleted",
                )
        for volume in manifest.hardware["volumes"]:
            snap = recorded["snapshots"].get(volume["device"])
            if not volume["shared"] and (snap is None or snap["size_gib"] < volume["size_gib"]):
                raise ArchiveFailed(
                    "snapshot_incomplete",
                    f"{volume['device']} is {volume['size_gib']} GiB, its snapshot "
                    f"{snap['size_gib'] if snap else 'missing'}; nothing is deleted",
                )
        raw = stub_from_tags(tags_of(image))
        if raw is None:
            raise StubTampered(f"AMI {recorded['ami']} lost its stub tags")
        stub = Stub.loads(raw)
        stub.verify(stub_key(repo.keys.master), repo.id)
        if stub.snapshot != job.snapshot or stub.manifest_sha256 != manifest.sha256():
            raise StubTampered("the AMI's stub names another archive")
        self.journal.step(job, "verified", self.clock())
        report(0.8, f"{manifest.vm_name}: AMI, snapshots and configuration verified")
        self._crash("ec2_after_verify")

    def _recheck(self, job: Job, vm: VmInfo, ec2: Ec2Files) -> None:
        """Just before the terminate: still stopped, still fenced, the same volumes."""
        assert job.manifest
        state = ec2.power_state(vm)
        if state != "off" or not ec2.fenced(vm):
            raise ArchiveFailed(
                "vm_changed", f"{vm.name} is {state} or was unfenced since it was imaged"
            )
        instance = ec2.must(vm.native_id)
        now = {v["device"]: v["volume"] for v in ec2.volumes(instance)}
        if now != job.manifest.hardware["image"]["volume_ids"]:
            raise ArchiveFailed(
                "vm_changed", f"{vm.name}'s volumes changed since it was imaged; nothing is deleted"
            )

    def _terminate(
        self, job: Job, vm: VmInfo, ec2: Ec2Files, repo: Repository, report: Report
    ) -> ArchiveRecord:
        assert job.manifest
        assert job.snapshot
        assert job.placement
        ami = job.placement["image"]
        instance = ec2.instance(vm.native_id)
        if instance is not None:
            own = [v for v in ec2.volumes(instance) if not v["shared"]]
            if own:  # the volumes go with it: the snapshots hold them (a shared one stays)
                ec2.call(
                    ec2.ec2.modify_instance_attribute,
                    InstanceId=vm.native_id,
                    BlockDeviceMappings=[
                        {"DeviceName": v["device"], "Ebs": {"DeleteOnTermination": True}}
                        for v in own
                    ],
                )
            ec2.protect(vm.native_id, False)
            ec2.call(ec2.ec2.terminate_instances, InstanceIds=[vm.native_id])
        self._crash("ec2_mid_terminate")
        ec2.set_tags(ami, {FENCE_TAG: "archived"})
        now = self.clock()
        before = self.journal.life(job.endpoint, vm.native_id)
        record = ArchiveRecord(
            archived_at=now,
            snapshot=job.snapshot,
            repository=repo.id,
            size_before=sum(int(v["size_gib"]) for v in job.manifest.hardware["volumes"]) * GIB,
            stored_bytes=job.stored_bytes,
            restore_count=before[2].restore_count if before and before[2] else 0,
            restored_from=before[2].restored_from if before and before[2] else None,
        )
        self.journal.set_life(job.endpoint, vm.native_id, LifeState.ARCHIVED, now, None, record)
        self.journal.end(job)
        report(1.0, f"{vm.name}: archived as AMI {ami}, instance terminated")
        return record

    def _roll_back(
        self, job: Job, vm: VmInfo, ec2: Ec2Files, open_repo: OpenRepository, error: Exception
    ) -> None:
        """Before the terminate: the instance goes back as it was, the archive is let go
        (every AMI an archive of it left, with its snapshots; the vault snapshot's pin). A
        fence that cannot be lifted now (EC2 does not answer) stays journalled at
        `unfencing`, as the file engine's does, for `Archiver.settle` to lift later."""
        stuck: DriverError | None = None
        if isinstance(error, ArchiveFailed) and error.code in ("already_archived", "busy"):
            state = LifeState.ARCHIVED if error.code == "already_archived" else LifeState.OFF
        else:
            state = LifeState.ARCHIVE_FAILED
            try:
                ec2.unfence(vm, job.placement)
            except DriverError as e:  # the failure is reported; fenced is safe
                stuck = e
            with contextlib.suppress(DriverError):  # an AMI left costs, never loses
                for image in ec2.images_of(vm.native_id):
                    if tags_of(image).get(FENCE_TAG) == "archiving":
                        self._drop_image(ec2, image)
        let_go(
            self.journal,
            job,
            open_repo,
            error,
            stuck,
            state,
            self.clock(),
            "the instance is whole but still fenced",
        )

    def _drop_image(self, ec2: Ec2Files, image: dict[str, Any]) -> None:
        ec2.call(ec2.ec2.deregister_image, ImageId=image["ImageId"])
        for snap in _snapshots(image).values():
            ec2.call(ec2.ec2.delete_snapshot, SnapshotId=snap["snapshot"])

    # --- restore -----------------------------------------------------------------------

    def restore(
        self,
        endpoint: str,
        vm: VmInfo,
        files: VmFiles,
        open_repo: OpenRepository,
        report: Report | None = None,
        requested_by: str | None = None,
        leave_on: bool = False,
    ) -> VmInfo:
        """Launch the instance again from its AMI; returns it (EC2 gives it a new id).
        `leave_on`: the post-restore actions start it anyway, so it is not stopped first."""
        ec2 = _ec2(files)
        with self.files_engine.exclusive(endpoint, vm.native_id, "restore"):
            return self._restore(
                endpoint, vm, ec2, open_repo, report or _quiet, requested_by, leave_on
            )

    def _restore(
        self,
        endpoint: str,
        vm: VmInfo,
        ec2: Ec2Files,
        open_repo: OpenRepository,
        report: Report,
        requested_by: str | None,
        leave_on: bool,
    ) -> VmInfo:
        job = self.journal.claim(endpoint, vm.native_id, "restore", self.clock(), requested_by)
        try:
            repo = open_repo()
            if job.step == "begun":
                stub, manifest, ami = self._open_stub(vm, ec2, repo)
                self.journal.set_life(endpoint, vm.native_id, LifeState.RESTORING, self.clock())
                self.journal.step(
                    job,
                    "launching",
                    self.clock(),
                    snapshot=stub.snapshot,
                    manifest=manifest,
                    placement={"image": ami},
                )
            if job.step == "launching":
                self._launch(job, vm, ec2, repo, report)
            if job.step == "launched":
                self._compare(job, ec2, leave_on, report)
        except Exception as e:  # the stub still stands: any failure undoes
            failure = self.files_engine._failure(e)
            self._undo_restore(job, vm, ec2, failure)
            raise failure from None
        # The point of no return: the instance is back and compared; the stub goes last.
        try:
            return self._restored(job, vm, ec2, report)
        except Exception as e:  # the journal stays at `compared`: the next run finishes
            self.journal.set_life(
                endpoint, vm.native_id, LifeState.RESTORING, self.clock(), _reason(e)
            )
            raise self.files_engine._failure(e) from None

    def _restored(self, job: Job, vm: VmInfo, ec2: Ec2Files, report: Report) -> VmInfo:
        """The stub's tags off the AMI (marked `restored`, kept), the life row to the new id."""
        assert job.placement
        endpoint = job.endpoint
        new_id = job.placement["instance"]
        image = self._image_of(ec2, job.placement["image"])
        if image is not None:
            ec2.drop_tags(
                image["ImageId"], [k for k in tags_of(image) if k.startswith(STUB_PREFIX)]
            )
            ec2.set_tags(image["ImageId"], {FENCE_TAG: "restored", RESTORED_AS_TAG: new_id})
        life = self.journal.life(endpoint, vm.native_id)
        record = life[2] if life else None
        if record is not None:
            record = record.model_copy(
                update={
                    "restore_count": record.restore_count + 1,
                    "restored_at": self.clock(),
                    "restored_from": vm.native_id,  # the link the cloud's catalog follows
                }
            )
        state = LifeState.RUNNING if ec2.power_state(_ref(new_id)) == "on" else LifeState.OFF
        self.journal.set_life(endpoint, new_id, state, self.clock(), None, record)
        self.journal.set_life(
            endpoint, vm.native_id, LifeState.OFF, self.clock(), f"restored as {new_id}"
        )
        self.journal.end(job)
        report(1.0, f"{vm.name}: restored as {new_id}")
        return ec2.info(ec2.must(new_id))

    def _open_stub(self, vm: VmInfo, ec2: Ec2Files, repo: Repository) -> tuple[Stub, Manifest, str]:
        """The file engine's checks of a stub (MAC, repository, snapshot, manifest hash),
        then that the manifest names the AMI the stub is on."""
        stub, manifest = self.files_engine._open_stub(vm, ec2, repo)
        image = ec2.stub_image(vm.native_id)
        ami = manifest.hardware.get("image", {}).get("ami")
        if image is None or ami != image["ImageId"]:
            raise StubTampered(f"the stub of {vm.name} is on an AMI its archive does not name")
        return stub, manifest, str(ami)

    def _user_data(self, repo: Repository, job: Job) -> bytes | None:
        """The instance's user data from the archive, checked against the manifest's hash
        (base64, as EC2 describes it); None when it had none."""
        assert job.manifest
        assert job.snapshot
        want = job.manifest.hardware["user_data_sha256"]
        if want is None:
            return None
        sink = io.BytesIO()
        try:
            repo.restore_stream(job.snapshot, USER_DATA_NAME, sink)
        except VaultError as e:
            raise ArchiveMismatch(f"the archived user data: {e}") from None
        if hashlib.sha256(sink.getvalue()).hexdigest() != want:
            raise ArchiveMismatch("the archived user data does not match the manifest's hash")
        return sink.getvalue()

    def _launch(
        self, job: Job, vm: VmInfo, ec2: Ec2Files, repo: Repository, report: Report
    ) -> None:
        assert job.manifest
        assert job.placement
        assert job.snapshot
        launched = ec2.tagged(RESTORED_FROM_TAG, vm.native_id)
        if launched:  # a crashed run's launch: the same instance, never a second one
            new_id = str(launched[0]["InstanceId"])
        else:
            hw = job.manifest.hardware
            token = hashlib.sha256(f"{vm.native_id}/{job.snapshot}".encode()).hexdigest()[:48]
            args: dict[str, Any] = {
                "ImageId": job.placement["image"],
                "MinCount": 1,
                "MaxCount": 1,
                "ClientToken": token,
                "InstanceType": hw["instance_type"],
                "EbsOptimized": hw["ebs_optimized"],
                "Monitoring": {"Enabled": hw["monitoring"]},
                "BlockDeviceMappings": [
                    {
                        "DeviceName": v["device"],
                        "Ebs": {
                            "VolumeSize": v["size_gib"],
                            "VolumeType": v["type"],
                            "DeleteOnTermination": v["delete_on_termination"],
                        },
                    }
                    for v in hw["volumes"]
                    if not v["shared"]
                ],
                "TagSpecifications": [
                    {
                        "ResourceType": "instance",
                        "Tags": [
                            *({"Key": k, "Value": v} for k, v in hw["tags"].items()),
                            {"Key": RESTORED_FROM_TAG, "Value": vm.native_id},
                        ],
                    }
                ],
            }
            if hw["zone"]:
                args["Placement"] = {"AvailabilityZone": hw["zone"]}
            if hw["subnet"]:
                args["SubnetId"] = hw["subnet"]
                if hw["private_ip"]:
                    args["PrivateIpAddress"] = hw["private_ip"]
            if hw["security_groups"]:
                args["SecurityGroupIds"] = hw["security_groups"]
            if hw["key_name"]:
                args["KeyName"] = hw["key_name"]
            if hw["iam_profile"]:
                args["IamInstanceProfile"] = {"Arn": hw["iam_profile"]}
            user_data = self._user_data(repo, job)
            if user_data:
                args["UserData"] = base64.b64decode(user_data)  # boto3 encodes it again
            answer = ec2.call(ec2.ec2.run_instances, **args)
            new_id = str(answer["Instances"][0]["InstanceId"])
        self.journal.step(
            job, "launched", self.clock(), placement={**job.placement, "instance": new_id}
        )
        report(0.5, f"{vm.name}: launched as {new_id} from {job.placement['image']}")
        self._crash("ec2_after_launch")

    def _compare(self, job: Job, ec2: Ec2Files, leave_on: bool, report: Report) -> None:
        assert job.manifest
        assert job.placement
        manifest = job.manifest
        new_id = job.placement["instance"]
        self._wait_state(ec2, new_id, {"running", "stopped"})
        now = ec2.config(ec2.must(new_id))
        archived = {k: v for k, v in manifest.hardware.items() if k not in NOT_COMPARED}
        differences = Manifest(
            manifest.vm_id, manifest.vm_name, manifest.hypervisor, "", "", archived
        ).differences(now)
        if differences:
            raise ArchiveFailed(
                "hardware_mismatch",
                f"{manifest.vm_name} came back different: {'; '.join(differences)}; "
                "the AMI's stub is kept",
            )
        if manifest.power_state == "off" and not leave_on:
            if ec2.power_state(_ref(new_id)) != "off":
                ec2.call(ec2.ec2.stop_instances, InstanceIds=[new_id])
            self._wait_state(ec2, new_id, {"stopped"})
        self.journal.step(job, "compared", self.clock())
        report(0.9, f"{manifest.vm_name}: {new_id} compared with the manifest")
        self._crash("ec2_after_compare")

    def _wait_state(self, ec2: Ec2Files, instance_id: str, wanted: set[str]) -> None:
        def state() -> tuple[str, dict[str, Any]]:
            found = ec2.instance(instance_id)
            return ("terminated" if found is None else str(found["State"]["Name"])), found or {}

        self._until(state, wanted, {"terminated"}, self.waits.state_s, f"instance {instance_id}")

    def _undo_restore(self, job: Job, vm: VmInfo, ec2: Ec2Files, error: Exception) -> None:
        """The stub still stands and the AMI is the VM: the instances launched from it so
        far (this run's, a crashed run's) are copies and go."""
        with contextlib.suppress(DriverError):
            ids = {str(i["InstanceId"]) for i in ec2.tagged(RESTORED_FROM_TAG, vm.native_id)}
            if job.placement and job.placement.get("instance"):
                ids.add(job.placement["instance"])
            if ids and job.step != "begun":
                ec2.call(ec2.ec2.terminate_instances, InstanceIds=sorted(ids))
        state = LifeState.RESTORE_FAILED
        if isinstance(error, ArchiveFailed) and error.code == "busy":
            state = LifeState.ARCHIVED
        self.journal.set_life(job.endpoint, vm.native_id, state, self.clock(), _reason(error))
        self.journal.end(job)


def _ec2(files: VmFiles) -> Ec2Files:
    if not isinstance(files, Ec2Files):
        raise ArchiveFailed("not_supported", f"the EC2 engine got {files.hypervisor} files")
    return files


def _snapshots(image: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """An AMI's EBS snapshots by device: id and size."""
    return {
        m["DeviceName"]: {
            "snapshot": m["Ebs"]["SnapshotId"],
            "size_gib": int(m["Ebs"]["VolumeSize"]),
        }
        for m in image.get("BlockDeviceMappings", [])
        if "Ebs" in m and m["Ebs"].get("SnapshotId")
    }


def _ref(native_id: str) -> VmInfo:
    """A VmInfo naming an instance by id only, for the calls that need no more."""
    return VmInfo(native_id, native_id, "", None, (), 0, 0, Identifiers(ec2_instance_id=native_id))


def _quiet(fraction: float, detail: str) -> None:
    pass
