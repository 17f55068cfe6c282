"""Real processes for the tests: the cloud under uvicorn, and agents, as users run them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

BIN = Path(sys.executable).parent
SECRET = "test-secret-key-for-access-tokens-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cloud:
    """`dockyard serve` on a free port, against the given database."""

    def __init__(
        self,
        db_url: str,
        data_dir: Path,
        *,
        port: int | None = None,
        tls: tuple[Path, Path] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.scheme = "https" if tls else "http"
        self.url = f"{self.scheme}://127.0.0.1:{self.port}"
        self.env = (
            os.environ
            | {
                "DOCKYARD_DATABASE_URL": db_url,
                "DOCKYARD_DATA_DIR": str(data_dir),
                "DOCKYARD_PUBLIC_URL": self.url,
                "DOCKYARD_PORT": str(self.port),
                "DOCKYARD_SECRET_KEY": SECRET,
                "DOCKYARD_SWEEP_INTERVAL_S": "0.3",
                "DOCKYARD_LOG_LEVEL": "warning",
            }
            | (env or {})
        )
        if tls:
            self.env |= {"DOCKYARD_TLS_CERTFILE": str(tls[0]), "DOCKYARD_TLS_KEYFILE": str(tls[1])}
        self.log = data_dir / f"cloud-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.verify: Any = True

    def start(self, timeout: float = 30) -> Cloud:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [str(BIN / "dockyard"), "serve"], env=self.env, stdout=out, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"cloud exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            try:
                if (
                    httpx.get(f"{self.url}/healthz", timeout=1, verify=self.verify).status_code
                    == 200
                ):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"cloud did not start:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> float:
        """Stop the process; returns how long it took."""
        assert self.proc is not None
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return time.monotonic() - started

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


class Agent:
    """The `dockyard-agent` command with its own state directory."""

    def __init__(
        self, state: Path, env: dict[str, str] | None = None, exe: Path | None = None
    ) -> None:
        self.state = state
        self.env = os.environ | (env or {})
        self.exe = exe or BIN / "dockyard-agent"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = state.parent / f"{state.name}.log"

    def cli(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.exe), "--state", str(self.state), *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env | (env or {}),
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"dockyard-agent {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def dock(self, url: str, token: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.cli("dock", url, *extra, input=token + "\n")

    def start(self, env: dict[str, str] | None = None, options: tuple[str, ...] = ()) -> Agent:
        """`run` in the background; `options` go before it (`-v`, `--log-format json`)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [str(self.exe), "--state", str(self.state), *options, "run"],
            env=self.env | (env or {}),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        return self

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)


def eventually(
    check: Any, timeout: float = 20, interval: float = 0.1, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
