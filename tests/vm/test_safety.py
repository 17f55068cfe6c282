"""The safety net in every path, on libvirt's test driver and sushy-tools: the budget across
worker rounds, a restart, the shell and the cloud's commands; maintenance; the audit trail;
clones flagged; defaults that keep a DNS server active; the statistic each signal is judged by.

libvirt's test driver keeps a VM's state per connection, so a restarted module sees every VM
as its host file declares it again: the VMs switched off before the restart are counted on
the first connection, the ones after it on the second, and the budget must hold over both.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dockyard.agent.clock import ManualClock
from dockyard.agent.modules.base import CommandFailed, ModuleContext
from dockyard.agent.modules.vm import VmModule, module_at
from dockyard.agent.modules.vm.drivers.base import Sample
from dockyard.agent.modules.vm.lifecycle import InMaintenance
from dockyard.agent.protocol import CommandEntry, FlowMode, MetadataBatch, links, vocabulary
from dockyard.agent.protocol.vm import (
    IdleState,
    PowerAction,
    Signal,
    Statistic,
    VmLifecyclePolicy,
)

from ..peers.libvirt_hosts import Domain, host_file
from ..peers.redfish import Bmc
from .test_lifecycle import _age

START = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
POLICY = {
    "signals": ["cpu"],
    "idle_days": 2,
    "notice_hours": 24,
    "sample_interval_s": 86400,
    "default_contact": "ops@example.com",
}
IDLE = ("vm00", "vm01", "vm02", "vm03")
AGENT = (sys.executable, "-m", "dockyard.agent.cli")


def _ten_vms(tmp_path: Path) -> dict[str, Any]:
    domains = [Domain(f"vm{i:02d}", owner="team@example.com") for i in range(10)]
    uri = host_file(tmp_path, "kvm1", 64, 262144, domains)
    return {"kind": "libvirt", "hosts": [{"name": "kvm1", "uri": uri}]}


def _open(state: Path, clock: ManualClock, lab: dict[str, Any], smtp: Any) -> VmModule:
    module = module_at(state, clock)
    module.endpoints.add("lab", lab)
    module.set_local_policy(POLICY)
    module.update_settings(smtp=smtp.config(), links={"base_url": "https://agent.example"})
    for i in range(4, 10):  # 4 of the 10 turn idle: the other six are never acted on
        module.store.add_never_act("lab", f"vm{i:02d}", "kept", clock())
    return module


def _off(module: VmModule) -> set[str]:
    return {v.name for v in module.driver("lab").discover().vms if v.power_state == "off"}


def _rounds(module: VmModule, count: int) -> None:
    """The worker's own rounds, ten simulated minutes apart."""
    clock: ManualClock = module.clock  # type: ignore[assignment]
    for _ in range(count):
        clock.advance(timedelta(minutes=10))
        module.step()


def _budget_mails(smtp: Any) -> list[Any]:
    return [m for m in smtp.messages if "budget" in m["Subject"]]


def test_the_budget_holds_over_worker_rounds_a_restart_and_approvals(
    tmp_path: Path, smtp: Any
) -> None:
    lab = _ten_vms(tmp_path)
    state = tmp_path / "agent" / "modules" / "vm"
    clock = ManualClock(START)
    module = _open(state, clock, lab, smtp)
    try:
        _age(module, 4)
        assert len(module.run_lifecycle(clock()).proposed) == 4
        clock.advance(timedelta(hours=25))
        _rounds(module, 12)
        first = _off(module)
        assert len(first) == 1  # 10% of 10 VMs per day
        assert first <= set(IDLE)
        held = json.loads(module.store.mark("held") or "{}")
        assert (held["cap"], held["in_scope"], len(held["vms"])) == (1, 10, 3)
    finally:
        module.close()

    module = _open(state, clock, lab, smtp)  # a restart: a new process, a new connection
    try:
        asked: list[Any] = []
        power = module.lifecycle.power
        module.lifecycle.power = lambda *a, **k: asked.append(a) or power(*a, **k)  # type: ignore[method-assign]
        _rounds(module, 12)
        assert _off(module) == set()  # nothing more switched off after the restart
        assert asked == []  # a spent budget is seen before any hypervisor is asked
        assert len(_budget_mails(smtp)) == 1  # the contact is told once per window
        assert _budget_mails(smtp)[0]["To"] == "ops@example.com"
    finally:
        module.close()

    approved = subprocess.run(
        [*AGENT, "--state", str(tmp_path / "agent"), "vm", "approve", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert approved.returncode == 0, approved.stderr
    module = _open(state, clock, lab, smtp)
    try:
        _rounds(module, 6)
        second = _off(module)
        assert len(second) == 2  # exactly the approvals
        assert not second & first
        _rounds(module, 6)
        assert len(_off(module)) == 2
        clock.advance(DAY)  # a new window: its budget lets the last one go
        _rounds(module, 12)
        assert len(_off(module) - second) == 1
        assert first | second | _off(module) == set(IDLE)
        trail = module.store.audits()
        # The worker's rounds hold without writing a refusal each round: the hold is
        # written once, when the contact is told, naming the VMs that wait.
        assert [e for e in trail if e["outcome"] == "refused"] == []
        # once per window, the window sliding as the budget's does: a second telling only
        # when a hold comes a full window after the first.
        spent = [e for e in trail if e["action"] == "vm.budget.spent"]
        assert sorted(spent[0]["detail"]["held"]) == sorted(set(IDLE) - first)
        told = [datetime.fromisoformat(e["at"]) for e in spent]
        assert all(b - a >= DAY for a, b in itertools.pairwise(told))
        assert len(_budget_mails(smtp)) == len(spent)
        assert [e["detail"]["source"] for e in trail if e["action"] == "vm.approve"] == ["shell"]
        paid = [
            e["detail"]["paid_by"]
            for e in trail
            if e["action"] == "vm.power" and e["outcome"] == "ok"
        ]
        assert sorted(paid) == ["approval", "approval", "budget", "budget"]
    finally:
        module.close()


def _power(native_id: str, seq: int, **extra: Any) -> CommandEntry:
    return CommandEntry(
        seq=seq,
        command_id=f"00000000-0000-0000-0000-{seq:012d}",
        job_id=f"00000000-0000-0000-0001-{seq:012d}",
        name="vm.power",
        args={"endpoint": "lab", "native_id": native_id, "action": "shutdown"} | extra,
        expires_at=START + timedelta(days=30),
        timeout_s=60,
    )


def test_docked_the_cloud_draws_on_the_same_budget_and_cannot_raise_it(
    tmp_path: Path, smtp: Any
) -> None:
    lab = _ten_vms(tmp_path)
    sent: list[MetadataBatch] = []
    clock = ManualClock(START)

    def docked() -> VmModule:
        ctx = ModuleContext(tmp_path / "vm", lambda: FlowMode.METADATA, sent.append, clock)
        module = VmModule(ctx)
        module.endpoints.add("lab", lab)
        module.set_local_policy(POLICY)
        # The cloud's policy asks for every VM at once; the local budget (10%) still holds.
        module.on_policy("vm-lifecycle", "all", 1, {**POLICY, "budget_share": 1.0})
        return module

    module = docked()
    try:
        assert module.policy().budget_share == pytest.approx(0.10)
        _age(module, 4)
        ids = {s.vm.name: s.vm.native_id for s in module.store.vms()}
        results = []
        for seq, name in enumerate(IDLE, start=1):
            try:
                module.cmd_power(_power(ids[name], seq))
                results.append("ok")
            except CommandFailed as e:
                results.append(e.code)
        assert results == ["ok", "over_budget", "over_budget", "over_budget"]
        assert _off(module) == {"vm00"}
    finally:
        module.close()

    module = docked()
    try:
        for seq, name in enumerate(IDLE[1:], start=10):
            with pytest.raises(CommandFailed, match="budget") as refused:
                module.cmd_power(_power(ids[name], seq))
            assert refused.value.code == "over_budget"
        approval = _power("", 20)
        module.cmd_approve(approval.model_copy(update={"name": "vm.approve", "args": {"count": 1}}))
        module.cmd_power(_power(ids["vm01"], 21))
        assert _off(module) == {"vm01"}
        with pytest.raises(CommandFailed, match="count between"):
            module.cmd_approve(approval.model_copy(update={"args": {"count": 10**6}}))
        audit = [r for b in sent if b.kind == "vm.audit" for r in b.records]
        assert [r["outcome"] for r in audit if r["action"] == "vm.power"].count("refused") == 6
        assert any(r["action"] == "vm.approve" and r["detail"]["source"] == "cloud" for r in audit)
    finally:
        module.close()


def test_a_cloud_policy_with_no_endpoints_cannot_widen_the_local_scope_or_its_budget(
    tmp_path: Path,
) -> None:
    """The local policy covers `lab` (10 VMs); the agent also has `big` (30 VMs). The cloud's
    policy names no endpoints ("every endpoint") and the full share: neither the VMs judged,
    nor the VMs the budget's share is taken of, nor what a cloud command may touch grows."""
    lab = _ten_vms(tmp_path)
    big_domains = [Domain(f"big{i:02d}") for i in range(30)]
    (tmp_path / "big").mkdir()
    big = {
        "kind": "libvirt",
        "hosts": [
            {"name": "kvm9", "uri": host_file(tmp_path / "big", "kvm9", 64, 262144, big_domains)}
        ],
    }
    clock = ManualClock(START)
    ctx = ModuleContext(tmp_path / "vm", lambda: FlowMode.METADATA, lambda b: None, clock)
    module = VmModule(ctx)
    try:
        module.endpoints.add("lab", lab)
        module.endpoints.add("big", big)
        module.set_local_policy({**POLICY, "endpoints": ["lab"], "budget_share": 0.2})
        module.on_policy("vm-lifecycle", "all", 1, {**POLICY, "endpoints": [], "budget_share": 1.0})
        _age(module, 4)
        policy = module.policy()
        assert module.lifecycle.in_scope(policy) == ["lab"]
        assert module.lifecycle.budget(policy, clock()) == (2, 10, 0)  # 20% of lab's 10
        judged = {vm.endpoint for vm, _ in module.lifecycle.evaluate(policy, clock())}
        assert judged == {"lab"}
        far = next(s.vm.native_id for s in module.store.vms("big"))
        with pytest.raises(CommandFailed, match="outside the agent's local policy") as refused:
            module.cmd_power(_power(far, 1, endpoint="big"))
        assert refused.value.code == "refused_by_safety_net"
        assert not {v.name for v in module.driver("big").discover().vms if v.power_state == "off"}
        audit = module.store.audits()
        assert [(e["target"], e["outcome"]) for e in audit] == [(f"big/{far}", "refused")]
    finally:
        module.close()


def test_in_config_mode_refusals_and_approvals_go_up_as_codes_only(
    tmp_path: Path, smtp: Any
) -> None:
    """Config mode keeps VM names on the agent, yet the cloud's audit log must learn of a
    refusal: the trail goes up reduced to what the runner and the cloud let through."""
    lab = _ten_vms(tmp_path)
    sent: list[MetadataBatch] = []
    clock = ManualClock(START)
    ctx = ModuleContext(tmp_path / "vm", lambda: FlowMode.CONFIG, sent.append, clock)
    module = VmModule(ctx)
    try:
        module.endpoints.add("lab", lab)
        module.set_local_policy(POLICY)
        _age(module, 4)
        ids = {s.vm.name: s.vm.native_id for s in module.store.vms()}
        module.store.add_never_act("lab", ids["vm05"], "the payroll database", clock())
        with pytest.raises(CommandFailed):
            module.cmd_power(_power(ids["vm05"], 1))
        module.cmd_power(_power(ids["vm00"], 2))
        with pytest.raises(CommandFailed, match="budget"):
            module.cmd_power(_power(ids["vm01"], 3))
        module.cmd_approve(
            _power("", 4).model_copy(
                update={"name": "vm.approve", "args": {"count": 1, "by": "x@y.z"}}
            )
        )
        records = [r for b in sent if b.kind == "vm.audit" for r in b.records]
        assert all(vocabulary.batch_fits_config(b) for b in sent if b.kind == "vm.audit")
        assert [(r["action"], r["outcome"], r["detail"].get("code")) for r in records] == [
            ("vm.power", "refused", "refused_by_safety_net"),
            ("vm.power", "ok", None),
            ("vm.budget.spent", "not_sent", None),  # told once (no mail server here)
            ("vm.power", "refused", "over_budget"),
            ("vm.approve", "ok", None),
        ]
        text = json.dumps(records)
        for secret in ("vm0", "payroll", "x@y.z", "lab/", *ids.values()):
            assert secret not in text
        assert not [b for b in sent if b.kind != "vm.audit"]  # no inventory in config mode
        assert len(module.store.audits(unsent_only=True)) == 0
    finally:
        module.close()


def test_maintenance_is_neither_judged_nor_acted_on_and_its_host_stays_on(
    tmp_path: Path, smtp: Any
) -> None:
    bmc = Bmc(tmp_path / "bmc", {"kvm2": "On"}).start()
    try:
        hosts = [
            {
                "name": "kvm1",
                "uri": host_file(tmp_path, "kvm1", 8, 32768, [Domain("web1"), Domain("web2")]),
                "maintenance": True,
            },
            {"name": "kvm2", "uri": host_file(tmp_path, "kvm2", 8, 32768, []), "maintenance": True},
            {"name": "kvm3", "uri": host_file(tmp_path, "kvm3", 8, 32768, [Domain("app1")])},
        ]
        clock = ManualClock(START)
        module = module_at(tmp_path / "vm", clock)
        module.endpoints.add(
            "lab", {"kind": "libvirt", "hosts": hosts, "bmcs": {"kvm2": bmc.config("kvm2")}}
        )
        module.set_local_policy({**POLICY, "budget_share": 1.0, "notice_hours": 0})
        module.update_settings(smtp=smtp.config())
        _age(module, 4)
        report = module.run_lifecycle(clock())
        assert [d.vm_name for d in report.proposed] == ["app1"]
        for name in ("web1", "web2", "kvm2"):
            stored = module.store.find(name)[0]
            evaluation = module.store.evaluation("lab", stored.vm.native_id)
            assert evaluation["state"] == IdleState.MAINTENANCE
            assert any("maintenance" in r for r in evaluation["reasons"])
        web1 = module.store.find("web1")[0].vm.native_id
        with pytest.raises(InMaintenance, match="kvm1 is in maintenance"):
            module.lifecycle.power(module.policy(), "lab", web1, PowerAction.POWER_OFF, clock())
        with pytest.raises(InMaintenance, match="this host is in maintenance"):
            module.lifecycle.power(
                module.policy(), "lab", "host:kvm2", PowerAction.POWER_OFF, clock()
            )
        assert bmc.power_state("kvm2") == "On"
        assert _off(module) == {"app1"}  # its host is not in maintenance: off after the notice
        trail = [e for e in module.store.audits() if e["outcome"] == "refused"]
        assert [e["detail"]["code"] for e in trail] == ["host_in_maintenance"] * 2
    finally:
        bmc.stop()
        module.close()


def test_a_refused_link_is_audited(tmp_path: Path, smtp: Any) -> None:
    module = module_at(tmp_path / "vm", ManualClock(START))
    try:
        now = module.clock()
        with pytest.raises(links.BadLink):
            module.answer(links.sign(b"k" * 32, "n", "d", "lab/x", "skip", now, DAY))
        entry = module.store.audits()[-1]
        assert (entry["action"], entry["outcome"]) == ("vm.link", "refused")
        assert "not issued by us" in entry["detail"]["reason"]
    finally:
        module.close()


def test_two_vms_with_one_bios_uuid_are_flagged_and_a_command_reaches_only_one(
    tmp_path: Path,
) -> None:
    shared = "6c0b7b5e-6f4b-4c55-9f0e-3e0a3d1f0c11"
    module = module_at(tmp_path / "vm", ManualClock(START))
    try:
        # web2 is a clone of web1 (same BIOS UUID, a MAC of its own); lab3 is a second way
        # to the same host as lab1, so it sees web1 itself again: not a clone of it.
        macs = {1: "52:54:00:00:00:01", 2: "52:54:00:00:00:02", 3: "52:54:00:00:00:01"}
        for n, mac in macs.items():
            folder = tmp_path / f"h{n}"
            folder.mkdir()
            name = "web2" if n == 2 else "web1"
            uri = host_file(folder, f"kvm{n}", 8, 32768, [Domain(name, uuid=shared, mac=mac)])
            module.endpoints.add(f"lab{n}", {"kind": "libvirt", "hosts": [uri]})
        module.discover(module.clock())
        records = {r["endpoint"]: r for r in module.records(module.clock())}
        assert records["lab1"]["possible_clone_of"] == [f"lab2/{shared}"]
        assert records["lab2"]["possible_clone_of"] == [f"lab1/{shared}", f"lab3/{shared}"]
        assert records["lab3"]["possible_clone_of"] == [f"lab2/{shared}"]
        module.set_local_policy({**POLICY, "budget_share": 1.0})
        module.lifecycle.power(
            module.policy(), "lab1", shared, PowerAction.POWER_OFF, module.clock()
        )
        states = {
            e: next(v.power_state for v in module.driver(e).discover().vms)
            for e in ("lab1", "lab2")
        }
        assert states == {"lab1": "off", "lab2": "on"}
    finally:
        module.close()


def test_a_dns_server_moving_200_mb_a_day_is_active_by_default() -> None:
    from dockyard.agent.modules.vm import idleness
    from dockyard.agent.modules.vm.store import VmStore, day_of

    store = VmStore(Path(":memory:"))
    try:
        start = START - timedelta(days=20)
        per_s = 200 * 1024 / 86_400  # 200 MB a day, in KB/s
        rows = []
        for d in range(20):
            day = start + timedelta(days=d)
            rows += [
                Sample("dns", day + timedelta(minutes=5 * i), {Signal.CPU: 0.5, Signal.NET: per_s})
                for i in range(288)
            ]
        store.add_samples("lab", rows)
        today = day_of(START)
        history = store.histories("lab", today - 14, today)["dns"]
        policy = VmLifecyclePolicy(idle_days=14, signals=[Signal.CPU, Signal.NET])
        result = idleness.evaluate(policy, frozenset(Signal), history, today)
        assert result.state == IdleState.ACTIVE
        assert "net peak reached 2.37 KB/s" in result.reasons[0]
    finally:
        store.close()


def test_a_percentile_forgives_the_busiest_moments_and_every_reason_names_it() -> None:
    from dockyard.agent.modules.vm import idleness
    from dockyard.agent.modules.vm.store import VmStore, day_of

    store = VmStore(Path(":memory:"))
    try:
        start = START - timedelta(days=10)
        rows = []
        for d in range(10):
            day = start + timedelta(days=d)
            for i in range(288):  # a backup burst of ten samples a night, quiet otherwise
                net = 400.0 if i < 10 else 0.2
                rows.append(
                    Sample("vm", day + timedelta(minutes=5 * i), {Signal.CPU: 1.0, Signal.NET: net})
                )
        store.add_samples("lab", rows)
        today = day_of(START)
        policy = VmLifecyclePolicy(idle_days=7, signals=[Signal.CPU, Signal.NET])
        raw = store.histories("lab", today - 7, today)["vm"]
        peak = idleness.evaluate(policy, frozenset(Signal), raw, today)
        assert peak.state == IdleState.ACTIVE
        assert "net peak reached 400 KB/s" in peak.reasons[0]

        p95 = VmLifecyclePolicy.model_validate(
            {"idle_days": 7, "signals": ["cpu", "net"], "statistics": {"net": "p95"}}
        )
        figures = store.quantiles("lab", today - 7, today, {Signal.NET: 0.95})["vm"]
        judged = idleness.evaluate(
            p95, frozenset(Signal), idleness.with_statistics(raw, figures), today
        )
        assert judged.state == IdleState.IDLE
        assert "cpu peak < 5%" in judged.reasons[0]
        assert "net p95 < 1 KB/s" in judged.reasons[0]
        p99 = p95.model_copy(update={"statistics": {Signal.NET: Statistic.P99}})
        figures = store.quantiles("lab", today - 7, today, {Signal.NET: 0.99})["vm"]
        busy = idleness.evaluate(
            p99, frozenset(Signal), idleness.with_statistics(raw, figures), today
        )
        assert busy.state == IdleState.ACTIVE  # ten of 288 samples is more than 1%
        assert "net p99 reached" in busy.reasons[0]
    finally:
        store.close()
    with pytest.raises(ValueError, match="statistics apply to signals with a threshold"):
        VmLifecyclePolicy.model_validate({"statistics": {"heartbeat": "p95"}})


def test_a_vm_on_a_vsphere_host_in_maintenance_is_not_judged_nor_shut_down(
    tmp_path: Path,
) -> None:
    from pyVmomi import vim

    from ..peers.vsphere_sim import Vcsim

    sim = Vcsim(host=2, vm=2).start()
    module = module_at(tmp_path / "vm", ManualClock(START))
    try:
        module.endpoints.add("vc", {"kind": "vsphere", **sim.config()})
        module.set_local_policy({**POLICY, "budget_share": 1.0})
        module.discover(module.clock())
        vm = next(s.vm for s in module.store.vms("vc") if s.vm.power_state == "on")
        driver = module.driver("vc")
        host = vim.HostSystem(vm.host, driver.si._stub)  # type: ignore[attr-defined]
        driver._wait(host.EnterMaintenanceMode_Task(timeout=0))  # type: ignore[attr-defined]
        module.discover(module.clock())
        module.lifecycle.evaluate(module.policy(), module.clock())
        evaluation = module.store.evaluation("vc", vm.native_id)
        assert evaluation["state"] == IdleState.MAINTENANCE
        with pytest.raises(InMaintenance, match="is in maintenance"):
            module.lifecycle.power(
                module.policy(), "vc", vm.native_id, PowerAction.POWER_OFF, module.clock()
            )
        fresh = {v.native_id: v.power_state for v in driver.discover().vms}
        assert fresh[vm.native_id] == "on"
    finally:
        module.close()
        sim.stop()


def test_an_ec2_instance_with_a_scheduled_event_counts_as_in_maintenance(
    tmp_path: Path, moto: Any
) -> None:
    """moto keeps no scheduled events, so the events are AWS's documented shape (a fake of
    DescribeInstanceStatus's answer, the one part no peer here produces); discovery on moto
    shows that an instance without one is not in maintenance."""
    from dockyard.agent.modules.vm.drivers.base import SCHEDULED_EVENT_TAG
    from dockyard.agent.modules.vm.drivers.ec2 import scheduled_event
    from dockyard.agent.modules.vm.lifecycle import maintenance

    at = datetime(2026, 4, 9, 3, 0, tzinfo=UTC)
    status = {
        "InstanceId": "i-0abc",
        "Events": [
            {"Code": "system-reboot", "Description": "[Completed] done", "NotBefore": at},
            {"Code": "system-maintenance", "Description": "scheduled", "NotBefore": at},
        ],
    }
    assert scheduled_event(status) == "AWS scheduled system-maintenance from 2026-04-09 03:00 UTC"
    assert scheduled_event({"InstanceId": "i-0abc", "Events": []}) is None

    moto.reset()
    ec2 = moto.client("ec2")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": SCHEDULED_EVENT_TAG, "Value": "x"}]}
        ],
    )
    module = module_at(tmp_path / "vm", ManualClock(START))
    try:
        module.endpoints.add("aws", moto.config())
        module.discover(module.clock())
        (stored,) = module.store.vms("aws")
        assert SCHEDULED_EVENT_TAG not in stored.vm.tags, "an instance's own tag is not read"
        assert maintenance(stored, {}) is None
        flagged = replace(
            stored, vm=replace(stored.vm, tags={SCHEDULED_EVENT_TAG: scheduled_event(status)})
        )
        assert maintenance(flagged, {}) == (
            "AWS scheduled system-maintenance from 2026-04-09 03:00 UTC: treated as maintenance"
        )
    finally:
        module.close()


def test_inventory_goes_up_in_full_once_then_as_deltas_and_in_full_again_daily_or_asked(
    tmp_path: Path,
) -> None:
    lab = _ten_vms(tmp_path)
    sent: list[MetadataBatch] = []
    failing = {"now": False}
    clock = ManualClock(START)

    def upload(batch: MetadataBatch) -> None:
        if failing["now"]:
            raise ConnectionError("the cloud is away")
        sent.append(batch)

    module = VmModule(ModuleContext(tmp_path / "vm", lambda: FlowMode.METADATA, upload, clock))

    def names_sent() -> list[str]:
        out = sorted(r["name"] for b in sent if b.kind == "vm.inventory" for r in b.records)
        sent.clear()
        return out

    try:
        module.endpoints.add("lab", lab)
        module.set_local_policy({**POLICY, "budget_share": 1.0})
        module.discover(clock())
        first = names_sent()
        assert len(first) == 11, "ten VMs and their host, in full the first time"
        clock.advance(timedelta(minutes=15))
        module.discover(clock())
        assert names_sent() == [], "nothing changed: nothing sent"

        vm03 = module.store.find("vm03")[0].vm.native_id
        failing["now"] = True
        module.cmd_power(_power(vm03, 1))
        assert names_sent() == []
        failing["now"] = False
        clock.advance(timedelta(minutes=15))
        module.discover(clock())
        assert names_sent() == ["vm03"], "the change not sent before goes now, alone"

        report = module.cmd_report(_power("", 2).model_copy(update={"name": "vm.report"}))
        assert report.counts == {"vms": 11}
        assert len(names_sent()) == 11, "in full on the cloud's request"
        clock.advance(DAY)
        module.discover(clock())
        assert len(names_sent()) == 11, "and in full again a day later"
    finally:
        module.close()
