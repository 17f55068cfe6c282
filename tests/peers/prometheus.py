"""Prometheus 2.42, Debian's package, unpacked into build/peers (never installed: its
maintainer scripts would start a system daemon), scraping the given targets every 200 ms."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from ..procs import free_port

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT / "build" / "peers"


def binary() -> Path:
    out = PEERS / "prometheus" / "usr" / "bin" / "prometheus"
    if out.exists():
        return out
    PEERS.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=PEERS))
    try:
        subprocess.run(
            ["apt-get", "download", "prometheus"], cwd=work, check=True, capture_output=True
        )
        (deb,) = work.glob("prometheus_*.deb")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(work / "root")], check=True)
        (work / "root").rename(PEERS / "prometheus")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


class Prometheus:
    def __init__(self, targets: list[str]) -> None:
        self.targets = targets
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.folder = Path(tempfile.mkdtemp(prefix="prometheus-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        config = self.folder / "prometheus.yml"
        listed = ", ".join(f'"{t}"' for t in self.targets)
        config.write_text(
            "global:\n  scrape_interval: 200ms\n  scrape_timeout: 150ms\n"
            f"scrape_configs:\n  - job_name: dockyard\n    static_configs:\n"
            f"      - targets: [{listed}]\n"
        )
        log = open(self.folder / "prometheus.log", "ab")  # noqa: SIM115 - lives with it
        self.proc = subprocess.Popen(
            [
                str(binary()),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.folder / "prometheus.log").read_text()[-2000:])
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("prometheus did not become ready")

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5).json()
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        shutil.rmtree(self.folder, ignore_errors=True)
