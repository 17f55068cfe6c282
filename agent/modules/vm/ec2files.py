"""An EC2 instance as the archive engines see a VM: its EBS volumes, its stub, its fence.

EC2 has no files to stream: an instance's disks are EBS volumes, which only AWS can copy
(an AMI and its snapshots). So this `VmFiles` lists the volumes (for the size rules) and
refuses to read, write or delete bytes; what it offers is the rest: power, the fence, the
instance's configuration, and the stub, which lives in the AMI's tags (`STUB_PREFIX` and one
tag per field of `Stub`), so a new agent finds it by asking EC2 and checks its MAC with the
repository's key.

The fence. EC2 has no attribute that refuses a StartInstances (DisableApiStop refuses the
opposite, and only stops through the API). What it allows, and what this sets, is:
`DisableApiTermination` (nobody terminates the instance through the API while its image is
taken and checked; the engine lifts it itself, last, just before it terminates), and the tag
`FENCE_TAG` on the instance, which an IAM policy denying `ec2:StartInstances` on
`ec2:ResourceTag/dockyard:archive = archiving` turns into a refused start (AWS evaluates
that; moto does not). A start that still happens is caught: the power state is read again
before anything is deleted, and the archive rolls back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import fields
from typing import Any, BinaryIO

from ...protocol.vm import FileRole, PowerAction
from .drivers.base import VmGone, VmInfo
from .drivers.ec2 import ARCHIVE_TAG, ARCHIVED_INSTANCE_TAG, STATES, Ec2Driver
from .drivers.ec2 import STUB_PREFIX as STUB_PREFIX  # the engine and tests take it from here
from .stub import Stub, StubTampered
from .vmfiles import ExternalFile, VmFile, VmFiles
from .vmfiles.base import VmFilesError

FENCE_TAG = ARCHIVE_TAG
"""On the instance while it is archived (`archiving`); on the AMI: `archiving` until the
instance is terminated, then `archived` (the stub stands), then `restored`."""
INSTANCE_TAG = ARCHIVED_INSTANCE_TAG
"""On the AMI: the instance it was made from, set by CreateImage itself, so an AMI a crash
left behind is found again."""
RESTORED_FROM_TAG = "dockyard:restored-from"
"""On a restored instance: the archived instance's id, so a restore that crashed after its
launch finds the instance it launched instead of launching a second one."""
RESTORED_AS_TAG = "dockyard:restored-as"
WAS_PROTECTED_TAG = "dockyard:was-termination-protected"
"""On a fenced instance: whether it had termination protection before the fence, written
before the fence turns it on, so a crash between the two loses nothing to put back."""
OUR_TAGS = "dockyard:"
"""Tags with this prefix are ours: never recorded as the instance's, never compared."""
AWS_TAGS = "aws:"
"""Tags AWS sets itself (CloudFormation's, Auto Scaling's); nobody may set them, so they
are neither recorded nor compared."""
MAX_TAG_VALUE = 256
GIB = 1 << 30


def stub_tags(stub: Stub) -> dict[str, str]:
    """A signed stub as AMI tags, one per field (a tag value holds 256 characters)."""
    doc = json.loads(stub.dumps())
    out = {f"{STUB_PREFIX}{k}": str(v) for k, v in doc.items()}
    too_long = [k for k, v in out.items() if len(v) > MAX_TAG_VALUE]
    if too_long:
        raise VmFilesError(
            "stub_invalid", f"the stub's {', '.join(too_long)} is too long for an EC2 tag"
        )
    return out


def stub_from_tags(tags: dict[str, str]) -> bytes | None:
    """The stub the AMI's tags hold, as the bytes `Stub.loads` reads; None when it has none.
    A stub with a field missing or not a number where one is due is `StubTampered`."""
    found = {k[len(STUB_PREFIX) :]: v for k, v in tags.items() if k.startswith(STUB_PREFIX)}
    if not found:
        return None
    doc: dict[str, Any] = {}
    for f in fields(Stub):
        if f.name not in found:
            raise StubTampered(f"the AMI's stub has no {f.name}: truncated or edited")
        doc[f.name] = found[f.name]
    for name in ("files", "size"):
        try:
            doc[name] = int(doc[name])
        except ValueError:
            raise StubTampered(f"the AMI's stub {name} is not a number: edited") from None
    doc["format"] = int(found.get("format", "1"))
    return json.dumps(doc).encode()


class Ec2Files(VmFiles):
    """One EC2 endpoint (a region) through its driver's client."""

    hypervisor = "ec2"

    def __init__(self, driver: Ec2Driver) -> None:
        self.driver = driver
        self.ec2: Any = driver.ec2

    def call(self, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """An EC2 call, its failures as the driver's `DriverError`s."""
        return self.driver._call(fn, **kwargs)

    # --- the instance ----------------------------------------------------------------------

    def instance(self, native_id: str) -> dict[str, Any] | None:
        """The instance as EC2 describes it; None once it is terminated (or never was)."""
        try:
            answer = self.call(self.ec2.describe_instances, InstanceIds=[native_id])
        except VmGone:
            return None
        found = [i for r in answer.get("Reservations", []) for i in r.get("Instances", [])]
        if not found or found[0]["State"]["Name"] in ("terminated", "shutting-down"):
            return None
        return dict(found[0])

    def must(self, native_id: str) -> dict[str, Any]:
        found = self.instance(native_id)
        if found is None:
            raise VmGone(native_id)
        return found

    def tagged(self, key: str, value: str) -> list[dict[str, Any]]:
        """Live instances carrying the tag."""
        answer = self.call(
            self.ec2.describe_instances, Filters=[{"Name": f"tag:{key}", "Values": [value]}]
        )
        return [
            i
            for r in answer.get("Reservations", [])
            for i in r.get("Instances", [])
            if i["State"]["Name"] not in ("terminated", "shutting-down")
        ]

    def info(self, instance: dict[str, Any]) -> VmInfo:
        return self.driver._vm(instance)

    def archived(self, native_id: str) -> VmInfo:
        """An archived instance as discovery lists it (from its AMI)."""
        for vm in self.driver.archived():
            if vm.native_id == native_id:
                return vm
        raise VmGone(native_id)

    def config(self, instance: dict[str, Any]) -> dict[str, Any]:
        """What run-instances needs to launch the instance again, and what a restore
        compares field by field: type, network, groups, key, tags, volumes."""
        volumes = self.volumes(instance)
        return {
            "instance_type": instance.get("InstanceType"),
            "zone": instance.get("Placement", {}).get("AvailabilityZone"),
            "subnet": instance.get("SubnetId"),
            "vpc": instance.get("VpcId"),
            "private_ip": instance.get("PrivateIpAddress"),
            "security_groups": _groups(instance),
            "key_name": instance.get("KeyName"),
            "iam_profile": (instance.get("IamInstanceProfile") or {}).get("Arn"),
            "ebs_optimized": bool(instance.get("EbsOptimized", False)),
            "monitoring": instance.get("Monitoring", {}).get("State") == "enabled",
            "root_device": instance.get("RootDeviceName"),
            "user_data_sha256": self.user_data_hash(instance["InstanceId"]),
            "tags": {
                t["Key"]: t.get("Value", "")
                for t in instance.get("Tags", [])
                if not t["Key"].startswith((OUR_TAGS, AWS_TAGS))
            },
            "volumes": [{k: v for k, v in vol.items() if k != "volume"} for vol in volumes],
        }

    def user_data(self, native_id: str) -> str | None:
        """Its user data, base64 as EC2 keeps it (the restore gives it back; it may hold
        secrets, so it goes only into the encrypted archive, never into a tag)."""
        answer = self.call(
            self.ec2.describe_instance_attribute, InstanceId=native_id, Attribute="userData"
        )
        value = (answer.get("UserData") or {}).get("Value")
        return str(value) if value else None

    def user_data_hash(self, native_id: str) -> str | None:
        data = self.user_data(native_id)
        return None if data is None else hashlib.sha256(data.encode()).hexdigest()

    def volumes(self, instance: dict[str, Any]) -> list[dict[str, Any]]:
        """Its EBS volumes by device, with what EC2 says of each."""
        mapped = {
            m["Ebs"]["VolumeId"]: m
            for m in instance.get("BlockDeviceMappings", [])
            if "Ebs" in m and m["Ebs"].get("VolumeId")
        }
        if not mapped:
            return []
        described = self.call(self.ec2.describe_volumes, VolumeIds=sorted(mapped))
        out = []
        for v in described.get("Volumes", []):
            m = mapped[v["VolumeId"]]
            out.append(
                {
                    "device": m["DeviceName"],
                    "volume": v["VolumeId"],
                    "size_gib": int(v.get("Size", 0)),
                    "type": v.get("VolumeType"),
                    "delete_on_termination": bool(m["Ebs"].get("DeleteOnTermination", False)),
                    "shared": bool(v.get("MultiAttachEnabled", False)),
                }
            )
        return sorted(out, key=lambda x: str(x["device"]))

    def set_tags(self, resource: str, tags: dict[str, str]) -> None:
        if tags:
            self.call(
                self.ec2.create_tags,
                Resources=[resource],
                Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
            )

    def drop_tags(self, resource: str, keys: list[str]) -> None:
        if keys:
            self.call(self.ec2.delete_tags, Resources=[resource], Tags=[{"Key": k} for k in keys])

    def protect(self, native_id: str, on: bool) -> None:
        self.call(
            self.ec2.modify_instance_attribute,
            InstanceId=native_id,
            DisableApiTermination={"Value": on},
        )

    def protected(self, native_id: str) -> bool:
        answer = self.call(
            self.ec2.describe_instance_attribute,
            InstanceId=native_id,
            Attribute="disableApiTermination",
        )
        return bool(answer.get("DisableApiTermination", {}).get("Value", False))

    # --- the AMI -----------------------------------------------------------------------

    def images_of(self, native_id: str) -> list[dict[str, Any]]:
        """This account's AMIs made from the instance by an archive, newest first."""
        answer = self.call(
            self.ec2.describe_images,
            Owners=["self"],
            Filters=[{"Name": f"tag:{INSTANCE_TAG}", "Values": [native_id]}],
        )
        images = [dict(i) for i in answer.get("Images", [])]
        return sorted(images, key=lambda i: str(i.get("CreationDate", "")), reverse=True)

    def stub_image(self, native_id: str) -> dict[str, Any] | None:
        """The AMI that stands for the archived instance (its tags hold the stub)."""
        for image in self.images_of(native_id):
            if tags_of(image).get(FENCE_TAG) == "archived":
                return image
        return None

    # --- VmFiles -------------------------------------------------------------------------

    def files(self, vm: VmInfo) -> tuple[list[VmFile], list[ExternalFile]]:
        instance = self.instance(vm.native_id)
        if instance is None:
            return [], []
        own, shared = [], []
        for v in self.volumes(instance):
            if v["shared"]:
                shared.append(ExternalFile(v["volume"], v["size_gib"] * GIB, "multi-attach"))
            else:
                own.append(VmFile(v["device"], v["volume"], FileRole.DISK, v["size_gib"] * GIB))
        return own, shared

    def _no_files(self) -> VmFilesError:
        return VmFilesError(
            "not_supported", "EC2 has no files to stream: its disks go by AMI and EBS snapshots"
        )

    def reader(self, f: VmFile) -> AbstractContextManager[BinaryIO]:
        raise self._no_files()

    def write(self, f: VmFile, produce: Callable[[BinaryIO], None]) -> None:
        raise self._no_files()

    def delete(self, f: VmFile) -> None:
        raise self._no_files()

    def stat(self, f: VmFile) -> tuple[int, str | None] | None:
        raise self._no_files()

    def free_bytes(self, f: VmFile) -> int | None:
        return None

    def read_stub(self, vm: VmInfo) -> bytes | None:
        image = self.stub_image(vm.native_id)
        return None if image is None else stub_from_tags(tags_of(image))

    def write_stub(self, vm: VmInfo, raw: bytes) -> None:
        images = self.images_of(vm.native_id)
        if not images:
            raise VmFilesError("image_missing", f"{vm.name} has no AMI to carry its stub")
        self.set_tags(images[0]["ImageId"], stub_tags(Stub.loads(raw)))

    def remove_stub(self, vm: VmInfo) -> None:
        image = self.stub_image(vm.native_id)
        if image is not None:
            self.drop_tags(
                image["ImageId"], [k for k in tags_of(image) if k.startswith(STUB_PREFIX)]
            )

    def fence(self, vm: VmInfo) -> dict[str, str]:
        """Termination protection on and the fence tag set; returns whether protection
        was on before, so `unfence` puts it back as it was."""
        tags = tags_of(self.must(vm.native_id))
        was = tags.get(WAS_PROTECTED_TAG) or str(self.protected(vm.native_id)).lower()
        self.set_tags(vm.native_id, {WAS_PROTECTED_TAG: was, FENCE_TAG: "archiving"})
        self.protect(vm.native_id, True)
        return {"termination_protected": was}

    def unfence(self, vm: VmInfo, placement: dict[str, str] | None) -> None:
        """Protection back as it was and the fence tags gone; an instance never fenced
        (no `WAS_PROTECTED_TAG`) is left as it is."""
        instance = self.instance(vm.native_id)
        if instance is None:
            return
        was = tags_of(instance).get(WAS_PROTECTED_TAG)
        if was is None:
            return
        self.protect(vm.native_id, was == "true")
        self.drop_tags(vm.native_id, [FENCE_TAG, WAS_PROTECTED_TAG])

    def fenced(self, vm: VmInfo) -> bool:
        instance = self.instance(vm.native_id)
        if instance is None:
            return False
        return tags_of(instance).get(FENCE_TAG) == "archiving" and self.protected(vm.native_id)

    def power_state(self, vm: VmInfo) -> str:
        """`off` only for a stopped instance: one still stopping is not yet off."""
        instance = self.instance(vm.native_id)
        if instance is None:
            return "gone"
        name = str(instance["State"]["Name"])
        return "off" if name == "stopped" else STATES.get(name, name)

    def power_on(self, vm: VmInfo) -> None:
        self.driver.power(vm, PowerAction.POWER_ON)

    def hardware(self, vm: VmInfo) -> dict[str, Any]:
        return self.config(self.must(vm.native_id))

    def mark(self, vm: VmInfo, text: str | None) -> None:
        """Nothing to write: an archived instance's mark is its AMI's `FENCE_TAG`, which
        the engine sets as the last step of the archive."""


def _groups(instance: dict[str, Any]) -> list[str]:
    """Its security groups: the instance's, and its primary interface's (the same on AWS;
    moto lists the interface's groups only there)."""
    groups = {g["GroupId"] for g in instance.get("SecurityGroups", [])}
    for nic in instance.get("NetworkInterfaces", []):
        if nic.get("Attachment", {}).get("DeviceIndex", 0) == 0:
            groups |= {g["GroupId"] for g in nic.get("Groups", [])}
    return sorted(groups)


def tags_of(resource: dict[str, Any]) -> dict[str, str]:
    """An EC2 resource's tags as a dict."""
    return {t["Key"]: t.get("Value", "") for t in resource.get("Tags", [])}
