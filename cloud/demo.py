"""`dockyard demo`: the product's story told in minutes on one machine.

It starts the embedded default (SQLite and a local blob folder under the demo's data
directory), a mail sink (aiosmtpd) the cloud sends its notices to, and a docked agent in
metadata mode whose VM module watches one VM on a clock that runs a day a minute: vcsim's
(govmomi's vCenter simulator, when `make demo` could build it), else libvirt's built-in
test host's. The cloud pushes a vm-lifecycle policy scaled to that clock (`demo-idle-vms`,
visible in GraphQL and the portal like any other), so within about two minutes the VM is
found idle, its owner is mailed a notice with skip and delay links, and when the notice
runs out the cloud orders the shutdown and the agent carries it out. On vcsim the VM is
then archived into a repository in the data directory and can be restored from the
portal or the agent's CLI; libvirt's test host has no disk files to archive, so there
the story stops at the shutdown. The terminal tells each step as the cloud sees it.

Why these figures: libvirt's test driver keeps a domain's CPU time still and moves its
disk and network counters with the wall clock at a steady rate, measured as 73.2 KB/s of
disk and 146.5 KB/s of network for its VM "test" (both sides of each, summed as the driver
does); our vcsim launcher reads a flat 1 on every counter of a VM annotated idle (0.01%
CPU, 1 KB/s). The demo keeps the default cpu (5%) and disk (100 KB/s) thresholds and
takes BMC Helix's idle-VM network figure (200 KB/s) for net, where the default's 1 KB/s
would make the test VM's steady counter an active machine. A demo day holds 24 samples
(one an hour by the agent's clock) where the default policy asks 288; half of them make a
day count.

The agent's clock keeps its position in the demo's data directory (`agent-clock`), so a
second run goes on from where the first stopped and nothing it stored lies in the future.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import importlib.util
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from dockyard.agent.protocol import FlowMode
from dockyard.cloud.settings import Settings

SCALE = 1440.0
"""A day of the agent's clock a minute of the wall's."""
POLICY_NAME = "demo-idle-vms"
OWNER = "demo@example.com"
ENDPOINT = "demo-kvm"
HOST = "kvm-test"
LIBVIRT_VM = "test"
"""The one domain of libvirt's test:///default."""
NOTICE_S = 72.0
"""The notice runs in the cloud's time, which is the wall's."""
SAMPLE_S = 3600
"""One sample an hour of the agent's clock: 24 a demo day."""


def demo_policy(notice_s: float, archive_to: Path | None = None) -> dict[str, Any]:
    """The vm-lifecycle policy the demo's cloud pushes, scaled to the demo's clock; with
    a repository, VMs the module shut down are archived into it at once."""
    archive = (
        {"at_once": True, "storage": {"kind": "directory", "path": str(archive_to)}}
        if archive_to is not None
        else {}
    )
    return {
        "signals": ["cpu", "disk", "net"],
        # The defaults but for net: BMC Helix's 200 KB/s, above the test driver's 146.5 KB/s.
        "thresholds": {"cpu": 5, "disk": 100, "net": 200},
        "idle_days": 1,
        "sample_interval_s": SAMPLE_S,
        "min_coverage": 0.5,
        "notice_hours": notice_s / 3600,
        "default_contact": OWNER,
        "budget_share": 1.0,
    } | ({"archive": archive} if archive else {})


def worker_pause_s(scale: float) -> float:
    """The VM module's round: a wall second at a day a minute (24 minutes of the agent's
    clock, so each hour's sample is taken within a round of its time), shorter as the
    clock runs faster."""
    return min(1.0, SAMPLE_S / scale / 2.5)


STOPPED = "Dockyard demo stopped."
DEFAULT_PORT = 8080


def _number(low: float, high: float, integer: bool = False) -> Callable[[str], float]:
    """An argparse type: a number within [low, high], else a clear usage error."""

    def parse(text: str) -> float:
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not between {low:g} and {high:g}")
        return value

    return parse


def _executable(text: str) -> Path:
    path = Path(text)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise argparse.ArgumentTypeError(f"{text} is not an executable file")
    return path


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--data", default=".demo", help="the demo's data directory (default .demo)")
    ap.add_argument(
        "--port",
        type=_number(0, 65535, integer=True),
        help=f"the cloud's port (default: the one this data directory used last, else "
        f"{DEFAULT_PORT} or a free one)",
    )
    ap.add_argument(
        "--scale",
        type=_number(1, 1e6),
        default=SCALE,
        help=f"how many times faster than the wall the agent's clock runs (default {SCALE:g}: "
        "a day a minute)",
    )
    ap.add_argument(
        "--notice-seconds",
        type=_number(0, 3600),
        default=NOTICE_S,
        help=f"how long the owner's notice runs, in the cloud's (wall) time (default {NOTICE_S:g})",
    )
    ap.add_argument(
        "--vcsim",
        type=_executable,
        help="govmomi's vCenter simulator built from tests/peers/vcsim (make demo builds it "
        "where Go and govmomi's sources are): its VM takes the story on to archive and restore",
    )


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on the port now. SO_REUSEADDR, as uvicorn binds, so
    the sockets a run that just ended left in TIME-WAIT do not count as in use."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port(preferred: int) -> int:
    """The preferred port when a server could listen on it, else one the system picks."""
    if preferred and port_free(preferred):
        return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(
                f"dockyard: the cloud exited with {proc.returncode}; its log's end ({log}):\n"
                + _tail(log)
            )
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"dockyard: the cloud did not answer at {url} within {timeout:.0f}s")


def _secret_file(path: Path, make: Callable[[], str]) -> str:
    """A secret made once and kept 0600 in the demo's data directory."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(make())
    return path.read_text().strip()


# --- the mail sink ---------------------------------------------------------------------

LINK = re.compile(r"https?://\S+/vm/notices/answer\?t=\S+")


class MailSink:
    """An SMTP server (aiosmtpd) in the demo's process: each message the cloud sends is
    kept as an .eml file in `folder` and told on the terminal with its links."""

    def __init__(self, folder: Path, say: Callable[[str], None]) -> None:
        from aiosmtpd.controller import Controller

        self.folder = folder
        self.say = say
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port(0)
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        count = len(list(self.folder.glob("*.eml"))) + 1
        path = self.folder / f"{count:04d}.eml"
        path.write_bytes(envelope.content)
        body = message.get_body(("plain",))
        text = body.get_content() if body is not None else ""
        links = LINK.findall(text)
        lines = [
            f"mail to {', '.join(envelope.rcpt_tos)}: {message['Subject']}",
            f"    saved as {path}",
        ]
        for label, link in zip(("skip (keep it running)", "delay a week"), links, strict=False):
            lines.append(f"    {label}: {link}")
        self.say("\n".join(lines))
        return "250 OK"

    def start(self) -> MailSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


# --- the cloud's side, through its public API -------------------------------------------


class Gql:
    def __init__(self, url: str, token: str) -> None:
        self.url = f"{url}/graphql"
        self.headers = {"Authorization": f"Bearer {token}"}

    def __call__(self, query: str, **variables: Any) -> dict[str, Any]:
        body = {"query": query, "variables": variables}
        answer = httpx.post(self.url, json=body, headers=self.headers, timeout=10)
        body = answer.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL: {body['errors']}")
        data: dict[str, Any] = body["data"]
        return data


POLICIES = """query($t: ID!) { policies(tenantId: $t, first: 100) { ... on PolicyConnection {
  edges { node { id name } } } } }"""
VERSIONS = """query($p: ID!) { policyVersions(policyId: $p, first: 100) {
  ... on PolicyVersionConnection { edges { node { version document } } } } }"""
CREATE = """mutation($t: ID!, $n: String!, $d: JSON!) { createPolicy(tenantId: $t, name: $n,
  kind: "vm-lifecycle", document: $d) { __typename ... on Policy { id }
  ... on Error { message } } }"""
NEW_VERSION = """mutation($p: ID!, $d: JSON!) { newPolicyVersion(policyId: $p, document: $d) {
  __typename ... on Error { message } } }"""
ASSIGN = """mutation($p: ID!, $s: ID!) { assignPolicy(policyId: $p, targetKind: SITE,
  targetId: $s) { __typename ... on Error { message } } }"""
VMS = """query($t: ID!) { vms(tenantId: $t) { ... on VmConnection { edges { node { name
  lifeState sightings { endpoint powerState idleState } } } } } }"""
DECISIONS = """query($t: ID!) { vmDecisions(tenantId: $t) { ... on VmDecisionConnection {
  edges { node { id vmName status reasons owner dueAt error } } } } }"""
AGENTS = (
    "query($t: ID!) { agents(tenantId: $t) { ... on AgentConnection "
    "{ edges { node { id name lastSeenAt } } } } }"
)


def _check(result: dict[str, Any], what: str) -> dict[str, Any]:
    if "message" in result:
        raise SystemExit(f"dockyard: the demo could not {what}: {result['message']}")
    return result


def push_policy(gql: Gql, tenant: str, site: str, document: dict[str, Any]) -> str:
    """The demo's policy, created (or given a new version when the demo's figures changed)
    and assigned to the demo's site, as a user would in GraphQL; the cloud pushes it to
    the docked agent. Returns the policy's id."""
    found = gql(POLICIES, t=tenant)["policies"]["edges"]
    policy = next((e["node"]["id"] for e in found if e["node"]["name"] == POLICY_NAME), None)
    if policy is None:
        created = _check(gql(CREATE, t=tenant, n=POLICY_NAME, d=document)["createPolicy"], "")
        policy = str(created["id"])
    else:
        versions = gql(VERSIONS, p=policy)["policyVersions"]["edges"]
        newest = max(versions, key=lambda e: e["node"]["version"])["node"]["document"]
        if newest != document:
            _check(gql(NEW_VERSION, p=policy, d=document)["newPolicyVersion"], "update its policy")
    _check(gql(ASSIGN, p=policy, s=site)["assignPolicy"], "assign its policy")
    return policy


class Story:
    """Tells the terminal each step the cloud sees: idle with its reasons, the notice
    given, the shutdown ordered and done, the archive; polled from GraphQL."""

    def __init__(self, gql: Gql, tenant: str, vm: str, say: Callable[[str], None]) -> None:
        self.gql = gql
        self.tenant = tenant
        self.vm = vm
        """The demo's VM (the catalog lists its host too, which the story leaves out)."""
        self.say = say
        self.told: set[tuple[str, ...]] = set()
        self.last: dict[str, tuple[str, str]] = {}
        self.quiet = False

    def tell(self, key: tuple[str, ...], text: str) -> None:
        if key not in self.told:
            self.told.add(key)
            if not self.quiet:
                self.say(text)

    def look(self) -> None:
        for d in self.gql(DECISIONS, t=self.tenant)["vmDecisions"]["edges"]:
            node = d["node"]
            name, status = node["vmName"], node["status"]
            key = ("decision", node["id"])
            reasons = "".join(f"\n    - {r}" for r in node["reasons"])
            self.tell((*key, "found"), f"VM {name} found idle, owner {node['owner']}:{reasons}")
            if status == "NOTIFIED":
                self.tell(
                    (*key, status),
                    f"VM {name}: notice given; shut down at {node['dueAt']} unless answered",
                )
            elif status in ("COMMANDED", "DONE", "HELD", "FAILED", "SKIPPED", "DELAYED"):
                detail = f" ({node['error']})" if node["error"] else ""
                words = {
                    "COMMANDED": "the notice ran out: the cloud ordered the shutdown",
                    "DONE": "the agent shut it down",
                    "HELD": "held: the agent's budget is spent",
                    "FAILED": "failed",
                    "SKIPPED": "skipped by its owner: its idle period starts again",
                    "DELAYED": f"delayed by its owner to {node['dueAt']}",
                }
                self.tell((*key, status), f"VM {name}: {words[status]}{detail}")
        for v in self.gql(VMS, t=self.tenant)["vms"]["edges"]:
            node = v["node"]
            if node["name"] != self.vm:
                continue
            for s in node["sightings"]:
                now = (s["powerState"], node["lifeState"])
                if self.last.get(s["endpoint"]) != now:  # each change, as often as it comes
                    self.last[s["endpoint"]] = now
                    self.say(
                        f"VM {node['name']} ({s['endpoint']}): power {s['powerState']}, "
                        f"{node['lifeState'].lower()}, {s['idleState'].lower()}"
                    )

    def watch(self, stop: threading.Event) -> None:
        """The first look only takes note of the decisions an earlier run already told."""
        self.quiet = True
        while not stop.wait(1.0):
            try:
                self.look()
            except (httpx.HTTPError, RuntimeError, KeyError, TypeError, ValueError):
                continue  # the cloud is starting or stopping; the next look tells
            self.quiet = False


# --- the agent ---------------------------------------------------------------------------


VC_ENDPOINT = "demo-vc"
VC_USER = "demo@vsphere.local"
IDLE_MARK = "vcsim:idle"
"""The demo's vcsim launcher (tests/peers/vcsim/main.go) reads a flat 1 on every counter of
a VM whose annotation holds this: vCenter's units, 0.01% CPU, 1 KB/s of disk and network."""


class Vcsim:
    """govmomi's vCenter simulator, where `make demo` could build it: one host, one VM,
    one datastore. Its VM's files are real files the archive reads and writes back, so
    the story goes on past the shutdown: archived, then restorable. It keeps its
    inventory in memory, so each run of the demo starts a new vCenter."""

    def __init__(self, binary: Path, password_file: Path) -> None:
        self.binary = binary
        self.password = _secret_file(password_file, lambda: secrets.token_urlsafe(12))
        self.password_file = password_file
        self.proc: subprocess.Popen[str] | None = None
        self.host, self.port = "", 0
        self.vm = ""

    def start(self, log: Path) -> Vcsim:
        with log.open("a") as err:
            self.proc = subprocess.Popen(
                [str(self.binary), "-host=1", "-vm=1", "-ds=1", f"-user={VC_USER}",
                 f"-password={self.password}"],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"dockyard: vcsim did not start; see {log}")
        self.host, port = json.loads(line)["host"].rsplit(":", 1)
        self.port = int(port)
        self.vm = self._mark_idle()
        return self

    def _mark_idle(self) -> str:
        """Annotate the simulator's VM so it reads as idle (and name its owner); returns
        the VM's name."""
        import ssl

        # pyVmomi's stubs cover too little to check against: Any at this boundary, as in
        # the agent's vSphere driver.
        import pyVim.connect
        import pyVmomi

        connect: Any = pyVim.connect
        vim: Any = pyVmomi.vim
        si = connect.SmartConnect(
            host=self.host,
            port=self.port,
            user=VC_USER,
            pwd=self.password,
            sslContext=ssl._create_unverified_context(),  # noqa: S323 - the local simulator
        )
        try:
            view = si.content.viewManager.CreateContainerView(
                si.content.rootFolder, [vim.VirtualMachine], True
            )
            vm = view.view[0]
            spec = vim.vm.ConfigSpec(annotation=f"{IDLE_MARK}\nowner={OWNER}")
            task = vm.ReconfigVM_Task(spec)
            while task.info.state not in ("success", "error"):
                time.sleep(0.05)
            return str(vm.name)
        finally:
            connect.Disconnect(si)

    def endpoint_args(self) -> list[str]:
        return [
            "vm", "endpoint", "add", VC_ENDPOINT, "--kind", "vsphere", "--host", self.host,
            "--port", str(self.port), "--user", VC_USER,
            "--password-file", str(self.password_file), "--insecure",
        ]  # fmt: skip

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def first_position(path: Path) -> Path:
    """The agent's clock file; on the first run it starts the clock an hour before the
    next midnight (UTC), so the first whole day, which the policy's one idle day needs,
    begins seconds after the agent does rather than up to a demo day later. Later runs go
    on from the position the last one left (agent/clock.py)."""
    if not path.exists():
        tomorrow = datetime.now(UTC).date() + timedelta(days=1)
        start = datetime.combine(tomorrow, datetime.min.time(), UTC) - timedelta(hours=1)
        path.write_text(start.isoformat())
    return path


class AgentSetUp(threading.Thread):
    """The agent's local set-up, on a thread beside the cloud's start (each agent command
    is a process of its own, seconds on a busy machine): where it is docked now, and
    libvirt's built-in test host as its VM endpoint when its libvirt driver is installed
    (`make demo` installs it where libvirt's headers are), with the module's round paced
    to the demo's clock (its `settings.json`, which has no command of its own)."""

    def __init__(
        self,
        agent_cmd: list[str],
        vm_state: Path,
        pause_s: float,
        vcsim: Vcsim | None,
        archive: Path,
    ) -> None:
        super().__init__(daemon=True)
        self.agent_cmd = agent_cmd
        self.vm_state = vm_state
        self.pause_s = pause_s
        self.vcsim = vcsim
        self.archive = archive
        self.links: list[dict[str, Any]] = []
        self.with_vm = False
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            status = subprocess.run(
                [*self.agent_cmd, "status", "--json"], capture_output=True, text=True, check=True
            )
            self.links = json.loads(status.stdout)["links"]
            if self.vcsim is not None:
                # A new vCenter each run (vcsim keeps its inventory in memory): the VM
                # module starts afresh too, its history and archive journal being the last
                # run's simulated VM's. The cloud's policy comes back from the agent's own
                # store, and the repository stays.
                shutil.rmtree(self.vm_state, ignore_errors=True)
                self._agent(*self.vcsim.endpoint_args())
                self._repository()
                self._pace()
                self.with_vm = True
            else:
                self.with_vm = self._vm_endpoint()
        except (OSError, subprocess.CalledProcessError, ValueError) as e:
            self.error = e

    def _agent(self, *args: str) -> str:
        return subprocess.run(
            [*self.agent_cmd, *args], check=True, capture_output=True, text=True
        ).stdout

    def _repository(self) -> None:
        """The archive repository in the demo's data directory: its passphrase and its
        recovery key (a repository with one key slot is refused) made once, 0600, and
        the passphrase file named to the agent (keys never pass through the cloud)."""
        phrase = self.archive.with_name("archive-passphrase")
        _secret_file(phrase, lambda: secrets.token_urlsafe(24))
        vault = ["vault", "--repo", str(self.archive), "--passphrase-file", str(phrase)]
        if not self.archive.exists():
            self._agent(*vault, "init")
            made = json.loads(self._agent(*vault, "--json", "key", "add-recovery"))
            _secret_file(self.archive.with_name("archive-recovery-key"),
                         lambda: str(made["recovery_key"]))  # fmt: skip
        self._agent("vm", "archive-key", "--passphrase-file", str(phrase))

    def result(self) -> AgentSetUp:
        self.join()
        if self.error is not None:
            detail = getattr(self.error, "stderr", "") or self.error
            raise SystemExit(f"dockyard: the demo's agent could not be set up: {detail}")
        return self

    def _vm_endpoint(self) -> bool:
        if importlib.util.find_spec("libvirt") is None:
            return False
        subprocess.run(
            [*self.agent_cmd, "vm", "endpoint", "add", ENDPOINT, "--kind", "libvirt",
             "--libvirt-host", f"{HOST}=test:///default"],
            check=True,
            capture_output=True,
            text=True,
        )  # fmt: skip
        self._pace()
        return True

    def _pace(self) -> None:
        settings = self.vm_state / "settings.json"
        data = json.loads(settings.read_text()) if settings.exists() else {}
        data["worker_pause_s"] = self.pause_s
        tmp = settings.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
        os.replace(tmp, settings)


def dock(
    agent_cmd: list[str],
    links: list[dict[str, Any]],
    url: str,
    data: Path,
    make_secret: Callable[[], str],
) -> None:
    """Dock the agent with this run's cloud, unless it is already (undocked first from a
    cloud at another address, as when the port changed)."""
    if links and links[0]["url"] != url:
        subprocess.run([*agent_cmd, "undock"], check=True, capture_output=True)
        links = []
    if links:
        return
    with tempfile.NamedTemporaryFile("w", dir=data, delete=False) as secret_file:
        secret_file.write(make_secret())
    try:
        subprocess.run(
            [*agent_cmd, "dock", url, "--token-file", secret_file.name, "--max-flow", "metadata"],
            check=True,
            capture_output=True,
        )
    finally:
        os.unlink(secret_file.name)


# --- the whole -----------------------------------------------------------------------------


class _Stop(Exception):
    """SIGINT or SIGTERM: the demo stops its processes and exits 0."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def _own_terminal() -> Callable[[], None]:
    """Take the terminal's foreground for the demo's own process group, as a shell does for
    a job, so that Ctrl-C reaches the demo and its processes but not a `make` that started
    it (make, sent SIGINT, ends with "*** Interrupt" and status 130 whatever its recipe
    did). Returns what gives the terminal back. Nothing is done without a terminal, or
    when the demo already leads the foreground group (run from a shell)."""
    try:
        fd = sys.stdin.fileno()
        if not os.isatty(fd) or os.tcgetpgrp(fd) != os.getpgrp() or os.getpgrp() == os.getpid():
            return lambda: None
        parent = os.getpgrp()
        os.setpgid(0, 0)
        _foreground(fd, os.getpgrp())
    except (OSError, ValueError):
        return lambda: None
    return lambda: _foreground(fd, parent)


def _foreground(fd: int, group: int) -> None:
    """tcsetpgrp, with SIGTTOU ignored (a process outside the foreground that sets it is
    otherwise stopped)."""
    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(fd, group)
    except OSError:
        pass  # the terminal went away: nothing to give back
    finally:
        signal.signal(signal.SIGTTOU, old)


def run(args: argparse.Namespace) -> int:
    """The embedded default end to end: cloud on SQLite, a mail sink, a docked agent whose
    VM goes idle, is noticed and shut down; Ctrl-C (or SIGTERM) stops it all and exits 0."""
    started = time.monotonic()

    said = threading.Lock()

    def say(text: str) -> None:
        """One step, whole: the mail sink's thread and the story's both tell, and print's
        text and its newline are two writes another thread could come between."""
        with said:
            sys.stdout.write(f"[demo +{time.monotonic() - started:5.0f}s] {text}\n")
            sys.stdout.flush()

    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    give_back = _own_terminal()
    for chatty in ("httpx", "mail.log"):  # each request and SMTP line: the logs' detail
        logging.getLogger(chatty).setLevel(logging.WARNING)
    procs: list[subprocess.Popen[bytes]] = []
    stops: list[Callable[[], None]] = []
    """What else to stop, in the order started (the mail sink, vcsim)."""
    stop = threading.Event()
    try:
        return _run(args, say, procs, stops, stop, started)
    except _Stop:
        return 0
    finally:
        for s in previous:  # a second Ctrl-C must not cut the clean-up short
            signal.signal(s, signal.SIG_IGN)
        stop.set()
        for proc in reversed(procs):  # the agent first, then the cloud
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for end in reversed(stops):
            end()
        give_back()
        for s, handler in previous.items():
            signal.signal(s, handler)
        print(f"\n{STOPPED}", flush=True)


def _run(
    args: argparse.Namespace,
    say: Callable[[str], None],
    procs: list[subprocess.Popen[bytes]],
    stops: list[Callable[[], None]],
    stop: threading.Event,
    started: float,
) -> int:
    # The admin acts the `dockyard` command has (cli.py imports this module for its parser).
    from dockyard.cloud.cli import bootstrap, enrolment_secret, issue_token, set_password

    data = Path(args.data).resolve()
    (data / "cloud").mkdir(parents=True, exist_ok=True)
    port_file = data / "port"
    if port_file.exists() and args.port is None:
        port = int(port_file.read_text())
        if not port_free(port):
            raise SystemExit(
                f"dockyard: port {port} of this demo is in use; is it running already?"
            )
    else:
        port = free_port(DEFAULT_PORT if args.port is None else args.port)
        port_file.write_text(str(port))
    url = f"http://127.0.0.1:{port}"
    sink = MailSink(data / "mail", say).start()
    stops.append(sink.stop)
    env = os.environ | {
        "DOCKYARD_DATA_DIR": str(data / "cloud"),
        "DOCKYARD_PUBLIC_URL": url,
        "DOCKYARD_PORT": str(port),
        "DOCKYARD_LOG_LEVEL": "warning",
        "DOCKYARD_SMTP_HOST": "127.0.0.1",
        "DOCKYARD_SMTP_PORT": str(sink.port),
        "DOCKYARD_SMTP_SENDER": "dockyard@demo.example",
        "DOCKYARD_NOTICE_INTERVAL_S": "2",
    }
    for key in ("DOCKYARD_DATABASE_URL", "DOCKYARD_SECRET_KEY", "DOCKYARD_BLOB_DIR"):
        env.pop(key, None)
    bindir = Path(sys.executable).parent
    agent_state = data / "agent"
    agent_cmd = [str(bindir / "dockyard-agent"), "--state", str(agent_state)]
    logs = {"cloud": data / "cloud.log", "agent": data / "agent.log", "vcsim": data / "vcsim.log"}
    vcsim = None
    if args.vcsim is not None:
        vcsim = Vcsim(args.vcsim, data / "vcsim-password")
        stops.append(vcsim.stop)
        vcsim.start(logs["vcsim"])
    archive = data / "archive"
    set_up = AgentSetUp(
        agent_cmd, agent_state / "modules" / "vm", worker_pause_s(args.scale), vcsim, archive
    )
    set_up.start()
    settings = Settings(data_dir=data / "cloud", public_url=url, port=port)
    from dockyard.cloud.server import migrate_database

    migrate_database(settings)
    ids = bootstrap(
        settings, "Demo MSP", "Demo School", OWNER, flow=FlowMode.METADATA, plan="enterprise"
    )
    api_token = _secret_file(data / "api-token", lambda: issue_token(settings, ids["user_id"]))
    # The portal's sign-in on the embedded default: a local password, made once, kept
    # beside the API token (0600).
    password_file = data / "portal-password"
    portal_password = _secret_file(password_file, lambda: secrets.token_urlsafe(12))
    set_password(settings, OWNER, portal_password)

    procs.append(_start([str(bindir / "dockyard"), "serve", "--no-migrate"], env, logs["cloud"]))
    wait_healthy(url, procs[0], logs["cloud"])
    gql = Gql(url, api_token)
    tenant = ids["tenant_id"]
    push_policy(
        gql,
        tenant,
        ids["site_id"],
        demo_policy(args.notice_seconds, archive if vcsim is not None else None),
    )

    agent = set_up.result()
    dock(
        agent_cmd,
        agent.links,
        url,
        data,
        lambda: enrolment_secret(settings, tenant, ids["site_id"], FlowMode.METADATA),
    )
    with_vm = agent.with_vm
    clock = f"scale:{args.scale:g}:{first_position(data / 'agent-clock')}"
    agent_env = os.environ | {"DOCKYARD_CLOCK": clock}
    procs.append(_start([*agent_cmd, "run"], agent_env, logs["agent"]))
    print(
        banner(url, data, tenant, api_token, portal_password, password_file, agent_cmd, clock,
               sink, with_vm, args, logs, vcsim),
        flush=True,
    )  # fmt: skip
    say(f"cloud and agent up in {time.monotonic() - started:.0f}s; watching")
    story = Story(gql, tenant, vcsim.vm if vcsim is not None else LIBVIRT_VM, say)
    watcher = threading.Thread(target=story.watch, args=(stop,), daemon=True)
    watcher.start()
    while all(p.poll() is None for p in procs):
        time.sleep(0.5)
    dead = next(p for p in procs if p.poll() is not None)
    name = "cloud" if dead is procs[0] else "agent"
    print(
        f"dockyard: the demo's {name} exited with {dead.returncode}; its log's end "
        f"({logs[name]}):\n{_tail(logs[name])}",
        file=sys.stderr,
    )
    return 1


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A process of the demo, its output appended to its log file (the terminal tells the
    story; the logs keep the detail)."""
    with log.open("ab") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def banner(
    url: str,
    data: Path,
    tenant: str,
    api_token: str,
    portal_password: str,
    password_file: Path,
    agent_cmd: list[str],
    clock: str,
    sink: MailSink,
    with_vm: bool,
    args: argparse.Namespace,
    logs: dict[str, Path],
    vcsim: Vcsim | None,
) -> str:
    agent = " ".join(agent_cmd)
    local = f"DOCKYARD_CLOCK={clock} {agent}"
    if with_vm:
        day_s = 86400 / args.scale
        if vcsim is not None:
            where = f"vcsim's vCenter (endpoint {VC_ENDPOINT}, VM {vcsim.vm!r})"
            vm, endpoint = vcsim.vm, VC_ENDPOINT
            archived = f"""
  5. Once off, the VM is archived at once into the repository {data / "archive"}
     (its files leave the datastore, a stub stays; the key is in {data}/archive-passphrase).
  6. Restore it: the portal's VMs page (Restore), or
       {local} vm restore {endpoint}/{vm}"""
        else:
            where = f'libvirt\'s test host (endpoint {ENDPOINT}, VM "test")'
            vm, endpoint = LIBVIRT_VM, ENDPOINT
            archived = f"""
  5. Archiving needs a VM whose disks are files the agent can read: libvirt's test host
     has none, so the story stops at the shutdown here. With vcsim built (Go and Debian's
     golang-github-vmware-govmomi-dev), `make demo` goes on to archive and restore; an
     archived VM comes back from the portal's VMs page (Restore) or
       {local} vm restore ENDPOINT/VM"""
        story = f"""
What happens (the agent's clock runs a day every {day_s:g} s; the cloud's is the wall's):
  1. The agent watches {where},
     one sample an hour of its clock, under the cloud's policy {POLICY_NAME!r}
     (idle 1 day, notice {args.notice_seconds:g} s, mail to {OWNER}).
  2. After one whole quiet day of the agent's clock (about {day_s:g} s on a first run, up
     to {2 * day_s:g} s on a later one) the VM is found idle, with its reasons.
  3. The cloud mails {OWNER} a notice with skip and delay links (printed here as it
     arrives). Open the skip link in a browser and answer it to keep the VM running.
  4. Unanswered, the notice runs out and the cloud orders the shutdown; the agent acts.{archived}

Watch:
  this terminal       each step as the cloud sees it
  portal, VMs page    {url}/portal/t/{tenant}/vms
  mail sink           SMTP 127.0.0.1:{sink.port}, every message in {sink.folder}
  agent state         {data / "agent"} (the VM module's in modules/vm)
  logs                {", ".join(str(v) for v in logs.values() if v.exists())}
  why idle or not     {local} vm explain {vm}
  the policy pushed   {local} vm policy show
"""
    else:
        story = """
The agent has no VM to watch: vcsim was not built (it needs Go and Debian's
golang-github-vmware-govmomi-dev) and the agent's libvirt driver is not installed
(libvirt's headers, Debian's libvirt-dev and pkg-config, were missing when the demo's
venv was made). Install either and run `make demo` again.
"""
    return f"""
Dockyard demo is running (data in {data}; Ctrl-C stops it).

  portal:             {url}/portal/
                      sign in as {OWNER}, password {portal_password}
                      (kept in {password_file})
  GraphQL / GraphiQL: {url}/graphql
  agent protocol:     {url}/agent/v1/openapi.json
  API token:          {api_token}
  tenant id:          {tenant}
{story}
Try:
  curl -s {url}/graphql -H 'Authorization: Bearer {api_token}' \\
       -H 'Content-Type: application/json' -d @- <<'JSON'
{json.dumps({"query": AGENTS, "variables": {"t": tenant}})}
JSON
"""
