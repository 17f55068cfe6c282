"""sushy-tools' Redfish emulator (`sushy-emulator --fake`) as the BMC of physical hosts,
with an htpasswd file so the tests prove credentials are checked."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import bcrypt
import httpx

from ..procs import BIN, free_port

USER = "admin"
PASSWORD = "bmc-test-password"


class Bmc:
    def __init__(self, folder: Path, systems: dict[str, str]) -> None:
        """`systems`: name -> initial power state ("On" or "Off")."""
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ids = {name: str(uuid.uuid4()) for name in systems}
        self.systems = systems
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> Bmc:
        self.folder.mkdir(parents=True, exist_ok=True)
        auth = self.folder / "htpasswd"
        digest = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
        auth.write_text(f"{USER}:{digest}\n")
        fake = [
            {"uuid": self.ids[name], "name": name, "power_state": state, "nics": []}
            for name, state in self.systems.items()
        ]
        config = self.folder / "sushy.conf"
        config.write_text(
            f"SUSHY_EMULATOR_FAKE_SYSTEMS = {fake!r}\n"
            f"SUSHY_EMULATOR_AUTH_FILE = {str(auth)!r}\n"
            f"SUSHY_EMULATOR_STATE_DIR = {str(self.folder / 'state')!r}\n"
        )
        log = open(self.folder / "sushy.log", "wb")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [
                str(BIN / "sushy-emulator"),
                "--fake",
                "-i",
                "127.0.0.1",
                "-p",
                str(self.port),
                "--config",
                str(config),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.folder / "sushy.log").read_text()[-3000:])
            try:
                httpx.get(f"{self.url}/redfish/v1/", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("sushy-emulator did not start")

    def config(self, name: str, password: str = PASSWORD) -> dict[str, object]:
        return {
            "url": self.url,
            "system": self.ids[name],
            "user": USER,
            "password": password,
            "power_timeout_s": 30,
        }

    def power_state(self, name: str) -> str:
        r = httpx.get(f"{self.url}/redfish/v1/Systems/{self.ids[name]}", auth=(USER, PASSWORD))
        r.raise_for_status()
        return str(r.json()["PowerState"])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
