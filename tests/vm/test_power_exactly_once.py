"""`vm.power` exactly once: the agent is killed with SIGKILL between the power change and
its journal entry, between the journal entry and the ack, after the ack, and (for
contrast) before the change, then restarted: every crash point agent/crashpoints.py has. vcsim keeps the VM's state and its event log across the agent's
death, so the test counts the power changes there: exactly one, whichever point. The
restarted agent's reconcile reads the VM's real state from vcsim.

The same on libvirt with its daemon and real QEMU domains (tests/peers/libvirt_qemu.py):
the power changes are counted by the hypervisor's own lifecycle events, seen by a
connection of the test's. (The test driver keeps a VM's state inside the process that
opened it, so a kill -9 there would prove nothing; its reconcile test stays below.)
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim

from dockyard.agent.crashpoints import POINTS
from dockyard.agent.modules.vm import module_at
from dockyard.agent.modules.vm.drivers.vsphere import VsphereDriver
from dockyard.agent.protocol import CommandEntry
from dockyard.cloud.domain import commands
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import Command

from ..factories import enrolment_secret, make_world, system
from ..peers.libvirt_hosts import Domain, host_file
from ..peers.libvirt_qemu import URI, StopEvents, TinyDomains
from ..peers.vsphere_sim import PASSWORD, Vcsim
from ..procs import Agent, Cloud, eventually


def _power_offs(driver: VsphereDriver, native_id: str) -> int:
    """VmPoweredOffEvent entries vcsim logged for this VM."""
    content = driver.si.RetrieveContent()
    ref = vim.VirtualMachine(native_id, driver.si._stub)
    spec = vim.event.EventFilterSpec(
        entity=vim.event.EventFilterSpec.ByEntity(entity=ref, recursion="self"),
        eventTypeId=["VmPoweredOffEvent"],
    )
    return len(content.eventManager.QueryEvents(spec))


def _final_state(pg: Database, tenant_id: uuid.UUID, command_id: uuid.UUID) -> str:
    """The command's state once it has finished (succeeded or failed)."""

    def finished() -> str | None:
        with system(pg, tenant_id) as ctx:
            row = ctx.session.get(Command, command_id)
            assert row is not None
            return row.state if row.state in ("succeeded", "failed") else None

    state: str = eventually(finished, timeout=60, what="the command to finish")
    return state


def _journal_detail(agent: Agent, command_id: uuid.UUID) -> str:
    """What the agent's journal says of the command (read-only: the agent still runs)."""
    db = sqlite3.connect(f"file:{agent.state / 'agent.db'}?mode=ro", uri=True)
    try:
        detail: str = db.execute(
            "SELECT detail FROM journal WHERE command_id = ?", (str(command_id),)
        ).fetchone()[0]
    finally:
        db.close()
    return detail


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_kill_9_around_a_power_change_leaves_exactly_one(
    cloud: Cloud, pg: Database, tmp_path: Path, point: str
) -> None:
    sim = Vcsim(host=1, vm=2, ds=1).start()
    agent = Agent(tmp_path / "agent")
    try:
        world = make_world(pg)
        agent.dock(cloud.url, enrolment_secret(world))
        agent_id = uuid.UUID(
            json.loads(agent.cli("status", "--json").stdout)["links"][0]["agent_id"]
        )
        password = tmp_path / "pw"
        password.write_text(PASSWORD)
        config: dict[str, Any] = sim.config()
        agent.cli(
            "vm", "endpoint", "add", "vc", "--kind", "vsphere", "--host", str(config["host"]),
            "--port", str(config["port"]), "--user", str(config["user"]),
            "--password-file", str(password), "--insecure",
        )  # fmt: skip
        agent.cli("vm", "discover")
        listed = json.loads(agent.cli("vm", "ls", "--json").stdout)
        target = next(r for r in listed if r["kind"] == "vm" and r["power_state"] == "on")
        native = target["native_id"]
        probe = VsphereDriver("probe", config)
        before = _power_offs(probe, native)

        with system(pg, world.tenant_id) as ctx:
            command_id = commands.issue(
                ctx,
                agent_id,
                "vm.power",
                {"endpoint": "vc", "native_id": native, "action": "power_off"},
            ).id
        agent.start(env={"DOCKYARD_CRASH_AT": point})
        assert agent.wait_exit(timeout=60) == -9, agent.log.read_text()[-2000:]
        agent.start()

        assert _final_state(pg, world.tenant_id, command_id) == "succeeded"
        assert _power_offs(probe, native) - before == 1, "exactly one power change"
        vms = {v.native_id: v.power_state for v in probe.discover().vms}
        assert vms[native] == "off"
        assert sum(state == "off" for state in vms.values()) == 1, "only the one addressed"
        detail = _journal_detail(agent, command_id)
        if point == "after_effect":
            assert detail == "completed before a restart", "the reconcile read vcsim"
        probe.close()
    finally:
        if agent.proc is not None:
            agent.stop()
        sim.stop()


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_kill_9_around_a_libvirt_power_change_leaves_exactly_one(
    cloud: Cloud, pg: Database, tmp_path: Path, point: str
) -> None:
    domains = TinyDomains(2)
    events = StopEvents()
    agent = Agent(tmp_path / "agent")
    try:
        world = make_world(pg)
        agent.dock(cloud.url, enrolment_secret(world))
        agent_id = uuid.UUID(
            json.loads(agent.cli("status", "--json").stdout)["links"][0]["agent_id"]
        )
        agent.cli("vm", "endpoint", "add", "kvm", "--kind", "libvirt", "--libvirt-host", f"h={URI}")
        agent.cli("vm", "discover")
        listed = json.loads(agent.cli("vm", "ls", "--json").stdout)
        target_name, other_name = domains.names
        native = next(r["native_id"] for r in listed if r.get("name") == target_name)

        with system(pg, world.tenant_id) as ctx:
            command_id = commands.issue(
                ctx,
                agent_id,
                "vm.power",
                {"endpoint": "kvm", "native_id": native, "action": "power_off"},
            ).id
        agent.start(env={"DOCKYARD_CRASH_AT": point})
        assert agent.wait_exit(timeout=60) == -9, agent.log.read_text()[-2000:]
        agent.start()

        assert _final_state(pg, world.tenant_id, command_id) == "succeeded"
        eventually(lambda: events.stopped[target_name] >= 1, timeout=10, what="the event")
        assert events.stopped[target_name] == 1, "exactly one power change"
        assert events.stopped[other_name] == 0, "only the one addressed"
        states = domains.states()
        assert states[target_name] == 5  # VIR_DOMAIN_SHUTOFF
        assert states[other_name] == 1  # VIR_DOMAIN_RUNNING
        detail = _journal_detail(agent, command_id)
        if point == "after_effect":
            assert detail == "completed before a restart", "the reconcile read libvirt"
    finally:
        if agent.proc is not None:
            agent.stop()
        events.close()
        domains.close()


def test_the_libvirt_reconcile_reads_the_vms_real_state(tmp_path: Path) -> None:
    uri = host_file(tmp_path, "kvm1", 8, 32768, [Domain("web1"), Domain("web2")])
    module = module_at(tmp_path / "vm")
    try:
        module.endpoints.add("lab", {"kind": "libvirt", "hosts": [{"name": "kvm1", "uri": uri}]})
        module.set_local_policy({"budget_share": 1.0})
        module.discover(module.clock())
        web1 = module.store.find("web1")[0].vm.native_id
        command = CommandEntry(
            seq=1,
            command_id=uuid.uuid4(),
            job_id=uuid.uuid4(),
            name="vm.power",
            args={"endpoint": "lab", "native_id": web1, "action": "power_off"},
            expires_at=module.clock(),
            timeout_s=60,
        )
        assert module.reconcile(command) is False, "still on: the runner runs it"
        module.cmd_power(command)
        assert module.reconcile(command) is True, "off on the host: done, not run again"
        states = {v.name: v.power_state for v in module.driver("lab").discover().vms}
        assert states == {"web1": "off", "web2": "on"}
    finally:
        module.close()
