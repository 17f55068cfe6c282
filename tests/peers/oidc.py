"""A real OpenID provider (npm `oidc-provider`, run by `oidc.mjs`) for the sign-in tests.

The package is installed with `npm ci` from the committed `oidc/package.json` and its lockfile
into `build/peers/oidc/` (ignored by git), once per lockfile: a second run finds it there. The
provider runs on a free 127.0.0.1 port and holds its state in memory, so each start is clean.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ..procs import free_port

HERE = Path(__file__).parent
SOURCE = HERE / "oidc"
CACHE = HERE.parent.parent / "build" / "peers" / "oidc"


@dataclass(frozen=True)
class Account:
    """A person the provider knows: `login` and `password` on its form, `sub` in its tokens."""

    login: str
    password: str
    sub: str
    email: str
    name: str


@dataclass
class OidcProvider:
    redirect_uris: list[str]
    accounts: list[Account]
    client_id: str = "dockyard-portal"
    client_secret: str = "dockyard-portal-test-secret"
    conform: bool = False
    """Keep email and name out of the ID token (only at userinfo)."""
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log: Path, timeout: float = 30) -> OidcProvider:
        folder = install()
        config = {
            "port": self.port,
            "conform": self.conform,
            "client": {
                "id": self.client_id,
                "secret": self.client_secret,
                "redirect_uris": self.redirect_uris,
            },
            "accounts": {
                a.login: {"sub": a.sub, "email": a.email, "name": a.name, "password": a.password}
                for a in self.accounts
            },
        }
        out = open(log, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            ["node", str(folder / "oidc.mjs")],
            cwd=folder,
            env=os.environ | {"DOCKYARD_TEST_OIDC": json.dumps(config)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        discovery = f"{self.issuer}/.well-known/openid-configuration"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"oidc-provider exited:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(discovery, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"oidc-provider did not start:\n{log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def install() -> Path:
    """`build/peers/oidc/` with oidc-provider installed from the lockfile and `oidc.mjs`
    beside it (so its import resolves there); `npm ci` runs again only when the lock changes."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"the OpenID provider peer needs {tool} (Node.js 20 or later)")
    lock = (SOURCE / "package-lock.json").read_bytes()
    stamp = CACHE / ".installed"
    digest = hashlib.sha256(lock).hexdigest()
    CACHE.mkdir(parents=True, exist_ok=True)
    if not (stamp.exists() and stamp.read_text() == digest):
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(SOURCE / name, CACHE / name)
        subprocess.run(
            ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=CACHE,
            check=True,
        )
        stamp.write_text(digest)
    shutil.copyfile(HERE / "oidc.mjs", CACHE / "oidc.mjs")
    return CACHE
