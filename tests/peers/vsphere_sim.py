"""vcsim, govmomi's vCenter simulator, built from Debian's Go sources by tests/peers/vcsim.

The binary is built once per version of main.go (about 13 s cold) into build/peers and
reused; each `Vcsim` is its own process with its own inventory, on a free port of 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = Path(__file__).with_name("vcsim") / "main.go"
GOPATH = "/usr/share/gocode"
USER = "dockyard@vsphere.local"
PASSWORD = "test-vcsim-password"


def binary() -> Path:
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    out = ROOT / "build" / "peers" / f"vcsim-{digest}"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GO111MODULE="off", GOPATH=GOPATH, GOFLAGS="")
    env.setdefault("GOCACHE", str(ROOT / "build" / "peers" / "go-cache"))
    tmp = out.with_suffix(".tmp")
    subprocess.run(
        ["go", "build", "-o", str(tmp), str(SOURCE)], check=True, env=env, cwd=SOURCE.parent
    )
    tmp.rename(out)
    return out


class Vcsim:
    """One simulated vCenter; `counts` are the launcher's flags (host, vm, ds, cluster...)."""

    def __init__(self, auth: bool = True, **counts: int) -> None:
        self.counts = counts
        self.auth = auth
        self.proc: subprocess.Popen[str] | None = None
        self.host = ""
        self.port = 0

    def start(self) -> Vcsim:
        args = [str(binary())]
        for name, value in self.counts.items():
            args.append(f"-{name.replace('_', '-')}={value}")
        if self.auth:
            args += [f"-user={USER}", f"-password={PASSWORD}"]
        self._log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._log, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self._log.seek(0)
            raise RuntimeError("vcsim did not start: " + self._log.read()[-2000:])
        address = json.loads(line)["host"]
        self.host, port = address.rsplit(":", 1)
        self.port = int(port)
        return self

    def config(self, **extra: object) -> dict[str, object]:
        """An endpoint configuration for the vSphere driver."""
        return {
            "host": self.host,
            "port": self.port,
            "user": USER,
            "password": PASSWORD,
            "verify_tls": False,
            **extra,
        }

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
