"""AWS EC2 (one region per endpoint) through boto3, with CloudWatch for the samples.

EC2 shows no hypervisor hosts: an availability zone stands in for a host, and an instance's
EBS volumes are its datastores. Creating instances by placement policy is not offered here
(AWS places them); discovery, samples and power are.

Idleness signals it reads, from CloudWatch over the sample window: cpu (CPUUtilization,
the maximum), disk (DiskReadBytes + DiskWriteBytes, and EBSReadBytes + EBSWriteBytes for
Nitro instances), net (NetworkIn + NetworkOut). A metric CloudWatch has no datapoint for
stays unknown, never zero. Heartbeat, sessions, processes and GPU: unknown (they need the
CloudWatch agent's custom metrics, which this driver does not read yet).

Maintenance: an instance with an open scheduled event (AWS's system-maintenance,
system-reboot, instance-reboot, instance-stop or instance-retirement, from
DescribeInstanceStatus) carries it in the tag `SCHEDULED_EVENT_TAG`, and the safety net
treats it as a VM whose host is in maintenance: not judged idle, not acted on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, ClassVar

from ....protocol.vm import Identifiers, PowerAction, Signal
from .base import (
    SCHEDULED_EVENT_TAG,
    Driver,
    DriverError,
    HostInfo,
    Inventory,
    LoginFailed,
    Sample,
    Unreachable,
    VmGone,
    VmInfo,
)


def scheduled_event(status: dict[str, Any]) -> str | None:
    """An instance status's open scheduled events as one sentence, or None. AWS keeps a
    completed or cancelled event listed a while, its description prefixed so."""
    open_events = [
        e
        for e in status.get("Events", [])
        if not str(e.get("Description", "")).startswith(("[Completed]", "[Canceled]"))
    ]
    if not open_events:
        return None
    return "; ".join(
        f"AWS scheduled {e.get('Code', 'an event')}"
        + (
            f" from {e['NotBefore']:%Y-%m-%d %H:%M} UTC"
            if isinstance(e.get("NotBefore"), datetime)
            else ""
        )
        for e in open_events
    )


boto3: Any
try:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError
except ImportError:  # pragma: no cover - depends on the install
    boto3 = None

STATES = {"running": "on", "pending": "on", "stopping": "off", "stopped": "off"}
METRICS = {
    Signal.CPU: (("CPUUtilization", "Maximum"),),
    Signal.DISK: (
        ("DiskReadBytes", "Sum"),
        ("DiskWriteBytes", "Sum"),
        ("EBSReadBytes", "Sum"),
        ("EBSWriteBytes", "Sum"),
    ),
    Signal.NET: (("NetworkIn", "Sum"), ("NetworkOut", "Sum")),
}
AUTH_CODES = {
    "AuthFailure",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "UnauthorizedOperation",
}
QUERIES_PER_CALL = 500
ARCHIVE_TAG = "dockyard:archive"
"""Set by the archive (`ec2archive.py`): on an instance being archived, `archiving`; on its
AMI, `archived` once the instance is terminated and the AMI's tags are its stub."""
ARCHIVED_INSTANCE_TAG = "dockyard:archived-instance"
STUB_PREFIX = "dockyard:stub:"
"""The stub's fields are the AMI's tags under this prefix, one a field (`ec2files.py`)."""
STUB_NAME_TAG = f"{STUB_PREFIX}vm_name"


class Ec2Driver(Driver):
    kind: ClassVar[str] = "ec2"
    signals: ClassVar[frozenset[Signal]] = frozenset({Signal.CPU, Signal.DISK, Signal.NET})

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        super().__init__(name, config)
        if boto3 is None:
            raise DriverError("driver_missing", "install dockyard[ec2] for EC2 endpoints")
        session = boto3.session.Session(
            aws_access_key_id=config.get("access_key_id"),
            aws_secret_access_key=config.get("secret_access_key"),
            region_name=config.get("region", "us-east-1"),
        )
        options = Config(
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=float(config.get("timeout_s", 10)),
            read_timeout=float(config.get("timeout_s", 30)),
        )
        endpoint = config.get("endpoint_url")
        self.ec2: Any = session.client("ec2", endpoint_url=endpoint, config=options)
        self.cloudwatch: Any = session.client("cloudwatch", endpoint_url=endpoint, config=options)

    def _call(self, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in AUTH_CODES:
                raise LoginFailed(f"{self.name}: AWS refused the credentials ({code})") from e
            if code.startswith("InvalidInstanceID"):
                raise VmGone(", ".join(kwargs.get("InstanceIds", []))) from e
            if code == "IncorrectInstanceState":
                raise DriverError("invalid_power_state", f"{self.name}: {e}") from e
            raise DriverError("aws_error", f"{self.name}: {e}") from e
        except EndpointConnectionError as e:
            raise Unreachable(f"{self.name}: cannot reach AWS: {e}") from e
        except BotoCoreError as e:
            raise Unreachable(f"{self.name}: {e}") from e

    def scheduled_events(self) -> dict[str, str]:
        """Per instance id, its open scheduled events, as one sentence."""
        found: dict[str, str] = {}
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"IncludeAllInstances": True, "MaxResults": 1000}
            if token:
                kwargs["NextToken"] = token
            page = self._call(self.ec2.describe_instance_status, **kwargs)
            for status in page.get("InstanceStatuses", []):
                why = scheduled_event(status)
                if why:
                    found[status["InstanceId"]] = why
            token = page.get("NextToken")
            if not token:
                return found

    def discover(self) -> Inventory:
        zones = self._call(self.ec2.describe_availability_zones).get("AvailabilityZones", [])
        hosts = tuple(HostInfo(z["ZoneName"], z["ZoneName"], 0, 0) for z in zones)
        vms = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"MaxResults": 1000}
            if token:
                kwargs["NextToken"] = token
            page = self._call(self.ec2.describe_instances, **kwargs)
            for reservation in page.get("Reservations", []):
                for instance in reservation.get("Instances", []):
                    state = instance.get("State", {}).get("Name", "")
                    if state in ("terminated", "shutting-down"):
                        continue
                    vms.append(self._vm(instance))
            token = page.get("NextToken")
            if not token:
                break
        live = {v.native_id for v in vms}
        vms += [v for v in self.archived() if v.native_id not in live]
        events = self.scheduled_events() if vms else {}
        vms = [
            replace(v, tags={**v.tags, SCHEDULED_EVENT_TAG: events[v.native_id]})
            if v.native_id in events
            else v
            for v in vms
        ]
        return Inventory(self.name, hosts, (), tuple(vms))

    def archived(self) -> list[VmInfo]:
        """Archived instances, from the AMIs that stand for them: terminated on EC2, they
        stay in the inventory (off, no volumes) as a vSphere VM stays registered with its
        stub, so they can be restored, and are reported archived."""
        answer = self._call(
            self.ec2.describe_images,
            Owners=["self"],
            Filters=[{"Name": f"tag:{ARCHIVE_TAG}", "Values": ["archived"]}],
        )
        out = []
        for image in answer.get("Images", []):
            tags = {t["Key"]: t.get("Value", "") for t in image.get("Tags", [])}
            native_id = tags.get(ARCHIVED_INSTANCE_TAG)
            if native_id:
                out.append(
                    VmInfo(
                        native_id=native_id,
                        name=tags.get(STUB_NAME_TAG) or native_id,
                        power_state="off",
                        host=None,
                        datastores=(),
                        cpus=0,
                        memory_mb=0,
                        identifiers=Identifiers(ec2_instance_id=native_id),
                    )
                )
        return out

    def _vm(self, instance: dict[str, Any]) -> VmInfo:
        tags = {t["Key"]: t.get("Value", "") for t in instance.get("Tags", [])}
        tags.pop(SCHEDULED_EVENT_TAG, None)  # only discovery sets it
        cpu = instance.get("CpuOptions", {})
        macs = sorted(
            n["MacAddress"].lower()
            for n in instance.get("NetworkInterfaces", [])
            if n.get("MacAddress")
        )
        volumes = tuple(
            m["Ebs"]["VolumeId"] for m in instance.get("BlockDeviceMappings", []) if "Ebs" in m
        )
        state = instance.get("State", {}).get("Name", "")
        return VmInfo(
            native_id=instance["InstanceId"],
            name=tags.get("Name", instance["InstanceId"]),
            power_state=STATES.get(state, "off"),
            host=instance.get("Placement", {}).get("AvailabilityZone"),
            datastores=volumes,
            cpus=int(cpu.get("CoreCount", 1)) * int(cpu.get("ThreadsPerCore", 1)),
            memory_mb=0,
            identifiers=Identifiers(ec2_instance_id=instance["InstanceId"], macs=macs),
            tags=tags,
            tools_running=True,
        )

    def sample(self, vms: Sequence[VmInfo], now: datetime, window: timedelta) -> list[Sample]:
        on = [vm for vm in vms if vm.power_state == "on"]
        period = max(60, int(window.total_seconds()) // 60 * 60)  # CloudWatch's granularity
        queries = []
        for index, vm in enumerate(on):
            for signal, metrics in METRICS.items():
                for part, (metric, stat) in enumerate(metrics):
                    queries.append(
                        {
                            "Id": f"q{index}_{signal.value}_{part}",
                            "MetricStat": {
                                "Metric": {
                                    "Namespace": "AWS/EC2",
                                    "MetricName": metric,
                                    "Dimensions": [{"Name": "InstanceId", "Value": vm.native_id}],
                                },
                                "Period": period,
                                "Stat": stat,
                            },
                            "ReturnData": True,
                        }
                    )
        found: dict[int, dict[Signal, float]] = {}
        for start in range(0, len(queries), QUERIES_PER_CALL):
            batch = queries[start : start + QUERIES_PER_CALL]
            result = self._call(
                self.cloudwatch.get_metric_data,
                MetricDataQueries=batch,
                StartTime=now - window,
                EndTime=now,
            )
            for series in result.get("MetricDataResults", []):
                values = series.get("Values") or []
                if not values:
                    continue
                index_s, signal_s, _part = series["Id"][1:].split("_")
                signal = Signal(signal_s)
                value = max(values) if signal == Signal.CPU else sum(values)
                per_vm = found.setdefault(int(index_s), {})
                per_vm[signal] = per_vm.get(signal, 0.0) + value
        seconds = window.total_seconds()
        samples = []
        for index, values in found.items():
            for signal in (Signal.DISK, Signal.NET):
                if signal in values:
                    values[signal] = values[signal] / 1024 / seconds  # bytes per window -> KB/s
            samples.append(Sample(on[index].native_id, now, values))
        return samples

    def power(self, vm: VmInfo, action: PowerAction) -> str:
        ids = [vm.native_id]
        described = self._call(self.ec2.describe_instances, InstanceIds=ids)
        instances = [i for r in described.get("Reservations", []) for i in r.get("Instances", [])]
        if not instances or instances[0]["State"]["Name"] in ("terminated", "shutting-down"):
            raise VmGone(vm.native_id)
        state = STATES.get(instances[0]["State"]["Name"], "off")
        if action == PowerAction.POWER_ON:
            if state != "on":
                self._call(self.ec2.start_instances, InstanceIds=ids)
            return "on"
        if state != "on":
            return state
        if action == PowerAction.SUSPEND:
            self._call(self.ec2.stop_instances, InstanceIds=ids, Hibernate=True)
            return "suspended"
        if action == PowerAction.STANDBY:
            raise DriverError("not_supported", f"{self.name}: EC2 has no standby")
        self._call(self.ec2.stop_instances, InstanceIds=ids, Force=action == PowerAction.POWER_OFF)
        return "off"
