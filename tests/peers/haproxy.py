"""HAProxy (Debian's package) in front of cloud replicas, as an operator would run it.

Health checks on `/readyz` (a draining replica says no at once) every 300 ms, a server
marked down after two failures; a request whose connection is refused is sent to the other
server (`option redispatch`). Held polls last up to 25 s, so client and server time-outs
are 60 s.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from ..procs import free_port

CONFIG = """\
global
    maxconn 8192
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 30s
    retries 3
    option redispatch
frontend cloud
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 300ms fall 2 rise 2
{servers}
"""


class Haproxy:
    def __init__(self, backends: list[int]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.backends = backends
        self.proc: subprocess.Popen[bytes] | None = None
        self.folder = Path(tempfile.mkdtemp(prefix="haproxy-"))

    def start(self) -> Haproxy:
        exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
        servers = "\n".join(
            f"    server r{i} 127.0.0.1:{port} check" for i, port in enumerate(self.backends)
        )
        config = self.folder / "haproxy.cfg"
        config.write_text(CONFIG.format(port=self.port, servers=servers))
        log = open(self.folder / "haproxy.log", "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen([exe, "-db", "-f", str(config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.folder / "haproxy.log").read_text()[-2000:])
            try:
                if httpx.get(f"{self.url}/livez", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("haproxy did not answer: " + (self.folder / "haproxy.log").read_text())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)
