"""Time: a notice's due time is computed once, by whoever sends it, from the clock it is
stated in, and nothing acts before it, with the agent's clock three days ahead of the
cloud's or three days behind. On libvirt's test driver and aiosmtpd.

Docked, the runner hands the module the cloud's time (its clock minus the skew measured on
the cloud's answers, tests/integration/test_runner_time.py measures it on a real cloud);
here that estimate is a second clock the test moves beside the agent's.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dockyard.agent.clock import ManualClock
from dockyard.agent.errors import FlowModeForbids
from dockyard.agent.modules.base import CommandFailed, ModuleContext
from dockyard.agent.modules.vm import VmModule
from dockyard.agent.protocol import CommandEntry, FlowMode, MetadataBatch

from ..peers.libvirt_hosts import Domain, host_file
from .test_safety import POLICY as SAFETY_POLICY

CLOUD_START = datetime(2026, 6, 5, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SKEWS = {"agent-3-days-ahead": 3 * DAY, "agent-3-days-behind": -3 * DAY}
POLICY = {**SAFETY_POLICY, "budget_share": 1.0}


def _refuse(batch: MetadataBatch) -> None:
    raise FlowModeForbids("nothing goes up here")


def _module(
    tmp_path: Path,
    agent: ManualClock,
    cloud: ManualClock | None,
    mode: FlowMode | None,
    smtp: Any = None,
) -> VmModule:
    ctx = ModuleContext(tmp_path / "vm", lambda: mode, _refuse, agent)
    if cloud is not None:
        ctx.cloud_time = cloud
    module = VmModule(ctx)
    uri = host_file(tmp_path, "kvm1", 8, 32768, [Domain("web1", owner="alice@example.com")])
    module.endpoints.add("lab", {"kind": "libvirt", "hosts": [{"name": "kvm1", "uri": uri}]})
    module.set_local_policy(POLICY)
    if smtp is not None:
        module.update_settings(smtp=smtp.config(), links={"base_url": "https://agent.example"})
    return module


def _both(agent: ManualClock, cloud: ManualClock | None, delta: timedelta) -> None:
    agent.advance(delta)
    if cloud is not None:
        cloud.advance(delta)


def _age(module: VmModule, agent: ManualClock, cloud: ManualClock | None, days: int) -> None:
    """Days of samples (the test driver's CPU counter stands still: 0% CPU)."""
    module.discover(agent())
    for _ in range(days):
        module.collect(agent())
        _both(agent, cloud, DAY)
    module.collect(agent())


def _power_state(module: VmModule) -> str:
    return next(v.power_state for v in module.driver("lab").discover().vms if v.name == "web1")


@pytest.mark.parametrize("docked", [False, True], ids=["standalone", "docked-config-mode"])
@pytest.mark.parametrize("skew", SKEWS.values(), ids=SKEWS.keys())
def test_the_notice_states_its_time_once_and_nothing_acts_before_it(
    tmp_path: Path, smtp: Any, skew: timedelta, docked: bool
) -> None:
    agent = ManualClock(CLOUD_START + skew)
    cloud = ManualClock(CLOUD_START) if docked else None
    reference = cloud or agent  # standalone, the agent's clock is the only one there is
    module = _module(tmp_path, agent, cloud, FlowMode.CONFIG if docked else None, smtp)
    try:
        _age(module, agent, cloud, 4)
        report = module.run_lifecycle(agent())
        assert [d.vm_name for d in report.proposed] == ["web1"]
        (mail,) = smtp.wait(1)
        stated = reference() + timedelta(hours=24)
        assert f"shut down on {stated:%Y-%m-%d %H:%M} UTC" in mail["Subject"]
        (notice,) = module.store.notices(open_only=True)
        assert notice.due_at == stated, "the time the mail states is the time carried"

        _both(agent, cloud, timedelta(hours=23))
        module.collect(agent())
        module.step(agent())
        assert _power_state(module) == "on"
        if docked:
            # The agent's clock alone jumps three days on (a late NTP correction): the
            # notice runs by the cloud's clock, which has not reached the stated time.
            agent.advance(3 * DAY)
            jumped = module.lifecycle.act_due(module.policy(), agent(), module.reference_now())
            assert jumped.acted == []
            assert _power_state(module) == "on"
            agent.advance(-3 * DAY)  # and back
        _both(agent, cloud, timedelta(hours=1, minutes=1))
        module.collect(agent())
        acted = module.lifecycle.act_due(module.policy(), agent(), module.reference_now())
        assert acted.acted == ["web1"], acted.errors
        assert _power_state(module) == "off"
        assert reference() > stated
    finally:
        module.close()


def _power(not_before: datetime, seq: int) -> CommandEntry:
    return CommandEntry(
        seq=seq,
        command_id=uuid.uuid4(),
        job_id=uuid.uuid4(),
        name="vm.power",
        args={
            "endpoint": "lab",
            "native_id": "",
            "action": "power_off",
            "not_before": not_before.isoformat(),
        },
        expires_at=CLOUD_START + DAY,
        timeout_s=60,
    )


@pytest.mark.parametrize("skew", SKEWS.values(), ids=SKEWS.keys())
def test_a_clouds_order_waits_for_the_time_its_notice_stated_by_the_clouds_clock(
    tmp_path: Path, skew: timedelta
) -> None:
    """Docked with metadata: the cloud mailed the owner and sends `vm.power` with the time
    it stated. An agent ahead would act early by its own clock, one behind would refuse an
    order that is due: both judge by the cloud's."""
    agent = ManualClock(CLOUD_START + skew)
    cloud = ManualClock(CLOUD_START)
    module = _module(tmp_path, agent, cloud, FlowMode.METADATA)
    try:
        module.discover(agent())
        native = module.store.find("web1")[0].vm.native_id

        def order(not_before: datetime, seq: int) -> CommandEntry:
            entry = _power(not_before, seq)
            return entry.model_copy(update={"args": {**entry.args, "native_id": native}})

        early = order(CLOUD_START + timedelta(hours=1), 1)
        with pytest.raises(CommandFailed) as refused:
            module.cmd_power(early)
        assert refused.value.code == "not_due"
        assert _power_state(module) == "on"
        (audit,) = [a for a in module.store.audits() if a["outcome"] == "refused"]
        assert audit["detail"]["code"] == "not_due"

        due = order(CLOUD_START - timedelta(minutes=1), 2)
        assert module.cmd_power(due).detail == f"lab/{native} is off"
        assert _power_state(module) == "off"

        naive = order(CLOUD_START, 3)
        naive = naive.model_copy(
            update={"args": {**naive.args, "not_before": "2026-06-05T09:00:00"}}
        )
        with pytest.raises(CommandFailed, match="UTC offset"):
            module.cmd_power(naive)
    finally:
        module.close()
