"""`dockyard-agent vm discover` when an endpoint cannot be reached, on the installed CLI
against libvirt's test driver (reachable) and a closed port (not): one line per endpoint
that could not be read, and an exit code that says so, whether or not others were read."""

from __future__ import annotations

import subprocess
from pathlib import Path

from dockyard.agent import errors

from ..peers.libvirt_hosts import Domain, host_file
from ..peers.vsphere_sim import Vcsim
from ..procs import Agent, free_port


def _lines(text: str) -> list[str]:
    return text.strip().splitlines()


def _discover(agent: Agent) -> subprocess.CompletedProcess[str]:
    result = agent.cli("vm", "discover", check=False)
    assert "Traceback" not in result.stderr
    return result


def test_an_unreachable_endpoint_is_one_line_and_exit_6_even_beside_a_reachable_one(
    tmp_path: Path,
) -> None:
    agent = Agent(tmp_path / "agent")
    assert _discover(agent).returncode == 0  # nothing configured: nothing failed
    closed = f"qemu+tcp://127.0.0.1:{free_port()}/system"
    agent.cli("vm", "endpoint", "add", "down", "--kind", "libvirt", "--libvirt-host", f"h={closed}")

    alone = _discover(agent)
    assert alone.returncode == errors.EXIT_UNREACHABLE, alone
    assert alone.stdout == ""
    (line,) = _lines(alone.stderr)
    assert line.startswith("dockyard-agent vm: endpoint down could not be reached")
    assert closed in line

    uri = host_file(tmp_path, "kvm1", 8, 32768, [Domain("app1"), Domain("app2")])
    agent.cli("vm", "endpoint", "add", "up", "--kind", "libvirt", "--libvirt-host", f"kvm1={uri}")
    both = _discover(agent)
    assert both.returncode == errors.EXIT_UNREACHABLE, both
    (read,) = _lines(both.stdout)
    assert read.startswith("up: 2 VMs")
    down, summary = _lines(both.stderr)
    assert down.startswith("dockyard-agent vm: endpoint down could not be reached")
    assert summary == (
        "dockyard-agent vm: read 1 of 2 endpoints; the others' VMs are as last discovered"
    )
    listed = agent.cli("vm", "ls").stdout  # what was read of the reachable one is kept
    header, *rows = listed.splitlines()
    assert header.split()[:3] == ["VM", "NAME", "POWER"]
    assert {"app1", "app2"} <= {row.split()[1] for row in rows}

    agent.cli("vm", "endpoint", "remove", "down")
    fine = _discover(agent)
    assert fine.returncode == 0
    assert fine.stderr == ""


def test_an_endpoint_that_refuses_the_credentials_is_exit_1(tmp_path: Path, vcsim: Vcsim) -> None:
    """Not an outage to wait out: a refused login is a configuration to fix."""
    agent = Agent(tmp_path / "agent")
    password = tmp_path / "password"
    password.write_text("not-the-password")
    agent.cli(
        "vm",
        "endpoint",
        "add",
        "vc",
        "--kind",
        "vsphere",
        "--host",
        vcsim.host,
        "--port",
        str(vcsim.port),
        "--user",
        "user",
        "--password-file",
        str(password),
        "--insecure",
    )
    result = _discover(agent)
    assert result.returncode == errors.EXIT_FAILED, result
    (line,) = _lines(result.stderr)
    assert line.startswith("dockyard-agent vm: endpoint vc could not be read (login_failed)")
