"""`dockyard demo` run for real under make on a terminal, as `make demo` runs it, on a
faster clock: the cloud pushes its demo policy, libvirt's test VM is found idle, its owner's
notice reaches the demo's mail sink with its links, the notice runs out and the VM is shut
down; Ctrl-C typed on the terminal stops it all, make exits 0 and the last line says the
demo stopped. (A second
run's port check and clock: tests/unit/test_demo_parts.py and test_clock.py.) On vcsim the
story goes on to the archive and a restore through the portal's mutation."""

from __future__ import annotations

import email
import email.policy
import fcntl
import importlib.util
import os
import pty
import shlex
import signal
import subprocess
import termios
import threading
from pathlib import Path

import pytest

from dockyard.cloud.demo import POLICY_NAME, STOPPED, Gql

from ..peers.vsphere_sim import binary as vcsim_binary
from ..procs import BIN, eventually, free_port

RESTORE = """mutation($v: ID!) { restoreVm(vmId: $v) { __typename ... on Error { message } } }"""
VMS = """query($t: ID!) { vms(tenantId: $t) { ... on VmConnection { edges { node { id name } } } } }"""


class Demo:
    """`make demo` as a user runs it: make on a terminal of its own (a pseudo-terminal, make
    the foreground group, as a shell leaves it), running `dockyard demo`; Ctrl-C is typed on
    that terminal, and the output is gathered line by line."""

    def __init__(self, data: Path, port: int, *more: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}
        # A day every 6 s of the wall's, a notice of 8 s: the whole story in under a minute.
        command = [str(BIN / "dockyard"), "demo", "--data", str(data), "--port", str(port),
                   "--scale", "14400", "--notice-seconds", "8", *more]  # fmt: skip
        makefile = data.parent / "Makefile"
        makefile.write_text(f"demo:\n\t@{shlex.join(command)}\n")
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            ["make", "-s", "-f", str(makefile), "demo"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
            preexec_fn=_controlling_terminal,
        )
        os.close(slave)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        pending = b""
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # the terminal's last writer is gone
                break
            if not chunk:
                break
            pending += chunk
            *done, pending = pending.split(b"\n")
            self.lines += [line.decode(errors="replace").rstrip("\r") for line in done]
        if pending:
            self.lines.append(pending.decode(errors="replace").rstrip("\r"))

    def said(self, text: str, since: int = 0) -> str | None:
        """The first line from `since` on that holds `text`."""
        return next((line for line in self.lines[since:] if text in line), None)

    def wait_for(self, text: str, timeout: float, since: int = 0) -> str:
        def check() -> str | None:
            if self.proc.poll() is not None and not self.said(text, since):
                raise AssertionError(f"the demo exited with {self.proc.returncode}:\n" + self.out())
            return self.said(text, since)

        found: str = eventually(check, timeout=timeout, interval=0.2, what=repr(text))
        return found

    def interrupt(self) -> int:
        """Ctrl-C typed on the terminal; make's exit status."""
        os.write(self.master, b"\x03")
        code = self.proc.wait(timeout=40)
        self.reader.join(timeout=5)
        os.close(self.master)
        return code

    def last_words(self) -> list[str]:
        return [line for line in self.lines if line.strip() and line.strip() != "^C"][-1:]

    def out(self) -> str:
        return "\n".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _controlling_terminal() -> None:
    """In the child, after setsid: stdin (the pseudo-terminal) becomes its controlling
    terminal, with the child's group in the foreground."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("libvirt") is None, reason="the demo's VM needs libvirt-python"
)
def test_the_demo_finds_the_test_vm_idle_mails_its_owner_shuts_it_down_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    data, port = tmp_path / "demo", free_port()
    demo = Demo(data, port)
    try:
        demo.wait_for("Dockyard demo is running", timeout=60)
        assert demo.said(f"policy {POLICY_NAME!r}")
        found = demo.wait_for("VM test found idle", timeout=60)
        assert "owner demo@example.com" in found
        reasons = demo.lines[demo.lines.index(found) + 1]
        assert "stayed under the thresholds" in reasons
        assert "net peak < 200 KB/s" in reasons
        mailed = demo.wait_for("mail to demo@example.com: VM test will be shut down", 30)
        skip = demo.lines[demo.lines.index(mailed) + 2]
        assert f"skip (keep it running): http://127.0.0.1:{port}/vm/notices/answer?t=" in skip
        demo.wait_for("VM test: the agent shut it down", timeout=60)
        assert demo.said("VM test (demo-kvm): power off")
        code = demo.interrupt()
        assert code == 0, demo.out()
        assert demo.last_words() == [STOPPED], demo.out()
    finally:
        demo.kill()

    saved = sorted((data / "mail").glob("*.eml"))
    assert saved, "the mail sink kept the notice"
    notice = email.message_from_bytes(saved[0].read_bytes(), policy=email.policy.default)
    assert notice["To"] == "demo@example.com"
    assert "/vm/notices/answer?t=" in notice.get_body(("plain",)).get_content()  # type: ignore[union-attr]


@pytest.mark.slow
def test_the_demo_on_vcsim_archives_the_vm_it_shut_down_and_the_portals_restore_brings_it_back(
    tmp_path: Path,
) -> None:
    """With vcsim (as `make demo` runs it where Go is), the story goes on: once off, the VM
    is archived at once; restoreVm, the portal's Restore, brings it back on."""
    data, port = tmp_path / "demo", free_port()
    demo = Demo(data, port, "--vcsim", str(vcsim_binary()))
    try:
        demo.wait_for("Dockyard demo is running", timeout=60)
        vm = "DC0_C0_RP0_VM0"
        assert demo.said(f"vm restore demo-vc/{vm}")
        demo.wait_for(f"VM {vm} found idle", timeout=60)
        demo.wait_for(f"mail to demo@example.com: VM {vm} will be shut down", timeout=30)
        demo.wait_for(f"VM {vm}: the agent shut it down", timeout=60)
        archived = demo.wait_for(f"VM {vm} (demo-vc): power off, archived", timeout=60)
        assert list((data / "archive").iterdir()), "the archive repository holds it"

        token = (data / "api-token").read_text().strip()
        tenant = demo.said("tenant id:").split()[-1]  # type: ignore[union-attr]
        gql = Gql(f"http://127.0.0.1:{port}", token)
        node = next(
            e["node"] for e in gql(VMS, t=tenant)["vms"]["edges"] if e["node"]["name"] == vm
        )
        assert gql(RESTORE, v=node["id"])["restoreVm"]["__typename"] == "Command"
        after = demo.lines.index(archived)
        demo.wait_for(f"VM {vm} (demo-vc): power on, running", timeout=60, since=after)

        assert demo.interrupt() == 0, demo.out()
        assert demo.last_words() == [STOPPED], demo.out()
    finally:
        demo.kill()
