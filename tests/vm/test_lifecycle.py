"""The module end to end on real peers: months of samples under the injected clock, notices
through a real SMTP server, signed answer links, shutdowns, and the safety net."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from dockyard.agent.clock import ManualClock
from dockyard.agent.errors import FlowModeForbids
from dockyard.agent.modules.base import CommandFailed, ModuleContext
from dockyard.agent.modules.vm import VmModule, module_at
from dockyard.agent.modules.vm.lifecycle import Refused
from dockyard.agent.protocol import CommandEntry, FlowMode, MetadataBatch, links
from dockyard.agent.protocol.vm import IdleState, PowerAction

from ..peers.libvirt_hosts import Domain, host_file

START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def _metrics(instance: str, at: datetime, cpu: float, net: float = 2000.0) -> list[dict[str, Any]]:
    dims = [{"Name": "InstanceId", "Value": instance}]
    data = [{"MetricName": "CPUUtilization", "Dimensions": dims, "Timestamp": at, "Value": cpu}]
    for name in ("NetworkIn", "NetworkOut", "DiskReadBytes", "DiskWriteBytes"):
        data.append({"MetricName": name, "Dimensions": dims, "Timestamp": at, "Value": net})
    return data


def test_91_simulated_days_turn_exactly_the_quiet_vms_idle(moto, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """One collection and one evaluation per simulated day, samples in moto's CloudWatch."""
    moto.reset()
    ec2, cloudwatch = moto.client("ec2"), moto.client("cloudwatch")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    ids = [
        i["InstanceId"]
        for i in ec2.run_instances(ImageId=image, MinCount=5, MaxCount=5)["Instances"]
    ]
    quiet_a, quiet_b, busy, gappy, excluded = ids
    ec2.create_tags(Resources=[excluded], Tags=[{"Key": "dockyard:exclude", "Value": "yes"}])
    clock = ManualClock(START)
    module = module_at(tmp_path / "vm", clock)
    try:
        module.endpoints.add("aws", moto.config())
        module.set_local_policy({"sample_interval_s": 86400, "min_coverage": 1.0})
        module.discover(clock())
        idle_by_day: dict[int, set[str]] = {}
        for day in range(92):
            now = clock()
            data = []
            for instance in ids:
                if instance == gappy and 40 <= day < 46:
                    continue  # the collector saw nothing for six days
                cpu = 60.0 if instance == busy and day % 7 == 3 else 1.5
                data += _metrics(instance, now - timedelta(hours=1), cpu)
            for start in range(0, len(data), 20):
                cloudwatch.put_metric_data(Namespace="AWS/EC2", MetricData=data[start : start + 20])
            module.collect(now)
            idle = module.lifecycle.evaluate(module.policy(), now)
            idle_by_day[day] = {vm.vm.native_id for vm, _ in idle}
            clock.advance(DAY)
        assert all(not idle_by_day[d] for d in range(90)), "nothing is idle before 90 days"
        assert idle_by_day[90] == {quiet_a, quiet_b}
        assert idle_by_day[91] == {quiet_a, quiet_b}
        states = {i: module.store.evaluation("aws", i) for i in ids}
        assert states[busy]["state"] == IdleState.ACTIVE
        assert states[gappy]["state"] == IdleState.UNKNOWN
        assert states[gappy]["missing_days"] == 6
        assert states[excluded]["state"] == IdleState.EXCLUDED
        assert any("exclusion tag" in r for r in states[excluded]["reasons"])
        last_active = module.store.vm("aws", busy).last_active_at  # type: ignore[union-attr]
        assert last_active is not None
        assert last_active > START + timedelta(days=80)
    finally:
        module.close()


@pytest.fixture
def lab(tmp_path: Path) -> dict[str, Any]:
    hosts = [
        {
            "name": "kvm1",
            "uri": host_file(
                tmp_path,
                "kvm1",
                8,
                32768,
                [
                    Domain("web1", owner="alice@example.com"),
                    Domain("web2", owner="bob@example.com"),
                ],
            ),
        },
        {"name": "kvm2", "uri": host_file(tmp_path, "kvm2", 8, 32768, [Domain("build1")])},
    ]
    return {"kind": "libvirt", "hosts": hosts}


def _libvirt_module(tmp_path: Path, lab: dict[str, Any], smtp: Any, **policy: Any) -> VmModule:
    clock = ManualClock(START)
    module = module_at(tmp_path / "vm", clock)
    module.endpoints.add("lab", lab)
    module.set_local_policy(
        {
            "signals": ["cpu"],
            "idle_days": 2,
            "notice_hours": 24,
            "sample_interval_s": 86400,
            "default_contact": "ops@example.com",
            "budget_share": 1.0,
            **policy,
        }
    )
    if smtp is not None:
        module.update_settings(smtp=smtp.config(), links={"base_url": "https://agent.example"})
    return module


def _age(module: VmModule, days: int) -> None:
    """Days of libvirt samples: the test driver's CPU counters stand still (0% CPU)."""
    clock: ManualClock = module.clock  # type: ignore[assignment]
    module.discover(clock())
    for _ in range(days):
        module.collect(clock())
        clock.advance(DAY)
    module.collect(clock())  # today's sample too, as a collector that keeps running would


def _state(module: VmModule, name: str) -> str:
    inventory = module.driver("lab").discover()
    return next(v.power_state for v in inventory.vms if v.name == name)


def test_standalone_notice_then_shutdown_after_the_notice_period(
    tmp_path: Path, lab: dict[str, Any], smtp: Any
) -> None:
    module = _libvirt_module(tmp_path, lab, smtp)
    try:
        _age(module, 4)
        clock: ManualClock = module.clock  # type: ignore[assignment]
        report = module.run_lifecycle(clock())
        assert report.idle == 3
        assert len(report.proposed) == 3
        assert not report.errors
        mails = smtp.wait(3)
        assert sorted(r[0] for r in smtp.recipients) == [
            "alice@example.com",
            "bob@example.com",
            "ops@example.com",
        ]
        alice = next(m for m in mails if m["To"] == "alice@example.com")
        body = alice.get_content()
        assert "web1" in alice["Subject"]
        assert "stayed under the thresholds" in body
        assert re.search(r"https://agent\.example/vm/notices/answer\?t=\S+", body)
        clock.advance(timedelta(hours=23))
        module.collect(clock())
        assert module.run_lifecycle(clock()).acted == []  # the notice period is not over
        assert _state(module, "web1") == "on"
        clock.advance(timedelta(hours=2))
        acted = module.lifecycle.act_due(module.policy(), clock())
        assert sorted(acted.acted) == ["build1", "web1", "web2"]
        assert {_state(module, n) for n in ("web1", "web2", "build1")} == {"off"}
        stored = module.store.find("web1")[0]
        assert stored.off_since == clock()  # the second period's timer starts now
        decisions = module.store.decisions("lab", stored.vm.native_id)
        assert decisions[0][1] == "done: off"
    finally:
        module.close()


def _links_in(message: Any) -> dict[str, str]:
    body = message.get_content()
    found = re.findall(r"(https?://\S+\?t=(\S+))", body)
    skip_url, delay_url = found[0], found[1]
    return {"skip": skip_url[1], "delay": delay_url[1]}


def test_skip_and_delay_links_forged_replayed_expired_and_misbound(
    tmp_path: Path, lab: dict[str, Any], smtp: Any
) -> None:
    module = _libvirt_module(tmp_path, lab, smtp)
    try:
        _age(module, 4)
        clock: ManualClock = module.clock  # type: ignore[assignment]
        module.run_lifecycle(clock())
        mails = {m["To"]: _links_in(m) for m in smtp.wait(3)}
        alice, bob, ops = (
            mails["alice@example.com"],
            mails["bob@example.com"],
            mails["ops@example.com"],
        )

        forged = alice["skip"][:-4] + ("AAAA" if not alice["skip"].endswith("AAAA") else "BBBB")
        with pytest.raises(links.BadLink, match="not issued by us or has been altered"):
            module.answer(forged)
        other_key = links.sign(b"k" * 32, "n", "d", "lab/x", "skip", clock(), DAY)
        with pytest.raises(links.BadLink, match="not issued by us"):
            module.answer(other_key)
        # A correctly signed link whose VM is not the notice's VM is refused.
        notice = module.store.notices(open_only=True)[0]
        misbound = links.sign(
            module.lifecycle.link_key,
            notice.notice_id,
            notice.decision_id,
            "lab/some-other-vm",
            "skip",
            clock(),
            DAY,
        )
        with pytest.raises(links.BadLink, match="does not belong"):
            module.answer(misbound)

        assert "stays on" in module.answer(alice["skip"])
        with pytest.raises(links.BadLink):
            module.answer(alice["skip"])  # replayed
        with pytest.raises(links.BadLink, match="already answered with skip"):
            module.answer(alice["delay"])
        assert "will not be shut down before" in module.answer(bob["delay"])
        with pytest.raises(links.BadLink, match="already been used"):
            module.answer(bob["delay"])

        clock.advance(timedelta(hours=25))
        acted = module.lifecycle.act_due(module.policy(), clock())
        assert acted.acted == ["build1"]  # alice skipped, bob delayed a week
        assert _state(module, "web1") == "on"
        assert _state(module, "web2") == "on"
        web1 = module.store.find("web1")[0]
        assert web1.quiet_from is not None  # the idle period starts again from the skip

        clock.advance(timedelta(days=30))  # every link has expired by now
        with pytest.raises(links.BadLink, match="expired"):
            module.answer(ops["delay"])
        acted = module.lifecycle.act_due(module.policy(), clock())
        assert acted.acted == ["web2"]
    finally:
        module.close()


def test_answers_over_http_take_effect_on_post_only(
    tmp_path: Path, lab: dict[str, Any], smtp: Any
) -> None:
    module = _libvirt_module(tmp_path, lab, smtp)
    try:
        module.update_settings(links={"listen": "127.0.0.1:0"})
        module._serve_answers()
        _age(module, 4)
        module.run_lifecycle(module.clock())
        skip = _links_in(next(m for m in smtp.wait(3) if m["To"] == "alice@example.com"))["skip"]
        base = f"http://127.0.0.1:{module.answers.port}/vm/notices/answer"
        page = httpx.get(base, params={"t": skip})
        assert page.status_code == 200
        assert "<form" in page.text
        assert module.store.notices(open_only=True)[0].answer is None
        done = httpx.post(base, data={"t": skip})
        assert done.status_code == 200
        assert "stays on" in done.text
        again = httpx.post(base, data={"t": skip})
        assert again.status_code == 400
        assert httpx.post(base, data={"t": "garbage"}).status_code == 400
    finally:
        module.close()


def test_never_act_list_and_exclusion_tag_beat_every_order(
    tmp_path: Path, lab: dict[str, Any], smtp: Any
) -> None:
    lab["hosts"][1]["uri"] = host_file(
        tmp_path,
        "kvm2",
        8,
        32768,
        [Domain("build1"), Domain("db1", lines={"dockyard:exclude": "yes"})],
    )
    module = _libvirt_module(tmp_path, lab, smtp)
    try:
        clock: ManualClock = module.clock  # type: ignore[assignment]
        _age(module, 4)
        web1 = module.store.find("web1")[0]
        module.store.add_never_act("lab", "web1", "the payroll VM", clock())
        module.store.add_never_act("*", "build1", "CI runner", clock())
        report = module.run_lifecycle(clock())
        assert [d.native_id for d in report.proposed] == [module.store.find("web2")[0].vm.native_id]
        assert module.store.evaluation("lab", web1.vm.native_id)["state"] == "excluded"
        with pytest.raises(Refused, match="never-act list"):
            module.lifecycle.power(
                module.policy(), "lab", web1.vm.native_id, PowerAction.POWER_OFF, clock()
            )
        command = CommandEntry(
            seq=1,
            command_id="00000000-0000-0000-0000-000000000001",
            job_id="00000000-0000-0000-0000-000000000002",
            name="vm.power",
            args={"endpoint": "lab", "native_id": web1.vm.native_id, "action": "power_off"},
            expires_at=clock() + DAY,
            timeout_s=60,
        )
        with pytest.raises(CommandFailed) as failed:
            module.cmd_power(command)
        assert failed.value.code == "refused_by_safety_net"
        assert _state(module, "web1") == "on"
        db1 = module.store.find("db1")[0].vm.native_id
        assert module.store.evaluation("lab", db1)["state"] == "excluded"
        with pytest.raises(CommandFailed, match="exclusion tag dockyard:exclude"):
            module.cmd_power(
                command.model_copy(update={"args": {**command.args, "native_id": db1}})
            )
        refusals = [
            (e["target"], e["detail"]["source"], e["detail"]["reason"])
            for e in module.store.audits()
            if e["outcome"] == "refused"
        ]
        assert [(t, src) for t, src, _ in refusals] == [
            (f"lab/{web1.vm.native_id}", "notice"),
            (f"lab/{web1.vm.native_id}", "cloud"),
            (f"lab/{db1}", "cloud"),
        ]
        assert "never-act list (the payroll VM)" in refusals[0][2]
        assert "exclusion tag" in refusals[2][2]
    finally:
        module.close()


def test_docked_with_metadata_the_agent_only_proposes(
    tmp_path: Path, lab: dict[str, Any], smtp: Any
) -> None:
    sent: list[MetadataBatch] = []

    def upload(batch: MetadataBatch) -> None:
        sent.append(batch)

    ctx = ModuleContext(tmp_path / "vm", lambda: FlowMode.METADATA, upload, ManualClock(START))
    module = VmModule(ctx)
    try:
        module.endpoints.add("lab", lab)
        module.set_local_policy({"signals": ["cpu"], "idle_days": 2, "sample_interval_s": 86400})
        module.update_settings(smtp=smtp.config())
        _age(module, 4)
        inventory = [b for b in sent if b.kind == "vm.inventory"]
        assert inventory
        kinds = {r["name"]: r["kind"] for r in inventory[0].records}
        assert kinds == {"web1": "vm", "web2": "vm", "build1": "vm", "kvm1": "host", "kvm2": "host"}
        report = module.run_lifecycle(module.clock())
        assert len(report.proposed) == 3
        assert report.acted == []
        decisions = [b for b in sent if b.kind == "vm.decision"]
        assert len(decisions) == 1
        assert len(decisions[0].records) == 3
        assert decisions[0].records[0]["proposed_action"] == "shutdown"
        assert smtp.messages == []  # the cloud gives the notices
        assert module.store.notices() == []
        assert len(module.run_lifecycle(module.clock()).proposed) == 0  # proposed once
        resent = [b for b in sent if b.kind == "vm.decision"]
        assert resent[-1].batch_id == decisions[0].batch_id  # the cloud drops it as a duplicate
        _age(module, 8)  # a week on, with no word from the cloud: proposed again
        assert len(module.run_lifecycle(module.clock()).proposed) == 3
        # The next inventory carries each VM's judgement: why, and the days it judged by.
        module.discover(module.clock())
        last = [b for b in sent if b.kind == "vm.inventory"][-1]
        web1 = next(r for r in last.records if r["name"] == "web1")["idleness"]
        assert web1["state"] == "idle"
        assert web1["thresholds"] == {"cpu": 5.0}
        assert web1["reasons"], "the reasons the catalog will show"
        days = [datetime.fromisoformat(d["day"]) for d in web1["days"]]
        assert days == sorted(days)
        assert len(days) == 2  # the first period: idle_days
        assert all(d["figures"]["cpu"] < 5.0 for d in web1["days"])
        assert datetime.fromisoformat(web1["window_start"]) <= days[0]
    finally:
        module.close()


def test_config_mode_keeps_notices_on_the_agent(
    tmp_path: Path, lab: dict[str, Any], smtp: Any
) -> None:
    def refuse(batch: MetadataBatch) -> None:
        raise FlowModeForbids("config mode")

    ctx = ModuleContext(tmp_path / "vm", lambda: FlowMode.CONFIG, refuse, ManualClock(START))
    module = VmModule(ctx)
    try:
        module.endpoints.add("lab", lab)
        module.set_local_policy(
            {
                "signals": ["cpu"],
                "idle_days": 2,
                "sample_interval_s": 86400,
                "default_contact": "ops@example.com",
            }
        )
        module.update_settings(smtp=smtp.config())
        _age(module, 4)
        assert len(module.run_lifecycle(module.clock()).proposed) == 3
        assert len(smtp.wait(3)) == 3
    finally:
        module.close()


def test_bad_input_is_reported_and_nothing_is_acted_on(
    tmp_path: Path, lab: dict[str, Any], smtp: Any
) -> None:
    module = _libvirt_module(tmp_path, lab, smtp)
    try:
        clock: ManualClock = module.clock  # type: ignore[assignment]
        module.endpoints.add("gone", {"kind": "libvirt", "hosts": [f"test://{tmp_path}/no.xml"]})
        results = module.discover(clock())
        assert results["gone"].startswith("error endpoint_unreachable")
        assert results["lab"].startswith("3 VMs")
        _age(module, 4)
        module.run_lifecycle(clock())
        # web2 is deleted behind our back before its notice runs out.
        conn = module.driver("lab")._conns[lab["hosts"][0]["uri"]]  # type: ignore[attr-defined]
        dom = conn.lookupByName("web2")
        dom.destroy()
        dom.undefine()
        module.discover(clock())
        clock.advance(timedelta(hours=25))
        acted = module.lifecycle.act_due(module.policy(), clock())
        assert "web2" not in acted.acted
        web2 = module.store.find("web2")[0]
        assert web2.gone_at is not None
        assert module.store.decisions("lab", web2.vm.native_id)[0][1] == "gone"
    finally:
        module.close()


def _agent(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dockyard.agent.cli", "--state", str(state), "vm", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_explains_a_decision_and_refuses_an_impossible_policy(
    tmp_path: Path, lab: dict[str, Any]
) -> None:
    state = tmp_path / "agent"
    module = module_at(state / "modules" / "vm", ManualClock(START))
    module.endpoints.add("lab", lab)
    module.set_local_policy({"signals": ["cpu"], "idle_days": 2, "sample_interval_s": 86400})
    _age(module, 4)
    module.lifecycle.evaluate(module.policy(), module.clock())
    module.close()

    explained = _agent(state, "explain", "web1")
    assert explained.returncode == 0, explained.stderr
    assert "IDLE" in explained.stdout
    assert "stayed under the thresholds" in explained.stdout
    as_json = json.loads(_agent(state, "explain", "web1", "--json").stdout)
    assert as_json["evaluation"]["state"] == "idle"
    assert _agent(state, "explain", "nope").returncode == 1

    before = (state / "modules" / "vm" / "policy.json").read_text()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"thresholds": {"cpu": 0}, "idle_days": 5}))
    refused = _agent(state, "policy", "set", str(bad))
    assert refused.returncode == 2
    assert "cpu threshold 0 can never be undercut" in refused.stderr
    assert (state / "modules" / "vm" / "policy.json").read_text() == before


@pytest.mark.parametrize(
    "args",
    [
        ("ls",),
        ("ls", "--json"),
        ("policy", "show"),
        ("budget",),
        ("audit",),
        ("endpoint", "list"),
        ("never-act", "list"),
    ],
)
def test_a_command_that_only_looks_writes_nothing(tmp_path: Path, args: tuple[str, ...]) -> None:
    state = tmp_path / "agent"
    state.mkdir()
    shown = _agent(state, *args)
    assert shown.returncode == 0, shown.stderr
    assert list(state.iterdir()) == [], f"{args} wrote {sorted(state.rglob('*'))}"
    if args == ("policy", "show"):
        assert json.loads(shown.stdout)["budget_share"] == 0.1
