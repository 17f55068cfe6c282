"""The images `make image` builds run: the cloud's serves with the machine's PostgreSQL,
migrates it, and answers /livez, /readyz and /metrics; it stops cleanly on SIGTERM; the
agent's starts its entry point with the C chunker built in. Run by `make image-test` (the
build takes minutes, so `make test` skips these unless DOCKYARD_IMAGE_DIR names the built
archives).

podman runs here only with runc and explicit limits: crun refuses this machine's hybrid
cgroups ("cgroups in hybrid mode not supported, drop all controllers from cgroupv2") and
the sandbox cannot raise a container's limits past its own ("setrlimit `RLIMIT_NOFILE`:
Operation not permitted"); both options are harmless where podman runs as usual."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine

from dockyard.cloud.store import migrate

from ..pg import fresh_database
from ..procs import SECRET, eventually, free_port

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# After a clean stop uvicorn raises the SIGTERM again and its process ends by it (143);
# tini, PID 1, reports that as 0.
TINI = ["/usr/bin/tini", "-e", "143", "--"]
IMAGES = Path(os.environ.get("DOCKYARD_IMAGE_DIR", ROOT / "build" / "image"))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed"),
    pytest.mark.skipif(
        not os.environ.get("DOCKYARD_IMAGE_DIR"), reason="`make image-test` builds and runs these"
    ),
]


def podman(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"podman {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def run_options() -> list[str]:
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return [
        "--runtime",
        "runc",
        "--ulimit",
        f"nofile={nofile}:{nofile}",
        "--ulimit",
        "nproc=4096:4096",
    ]


def image(kind: str) -> str:
    """The image loaded from its archive (not whatever podman has under that name)."""
    archive = IMAGES / f"dockyard-{kind}-{VERSION}.oci.tar"
    assert archive.exists(), f"{archive}: run `make image` first"
    return podman("pull", "-q", f"oci-archive:{archive}")


def config(image_id: str) -> dict[str, Any]:
    (inspected,) = json.loads(podman("image", "inspect", image_id))
    cfg: dict[str, Any] = inspected["Config"]
    return cfg


@pytest.fixture
def container_name() -> Iterator[str]:
    name = f"dockyard-test-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True, timeout=60)


def test_the_cloud_image_serves_migrates_and_stops_on_sigterm(container_name: str) -> None:
    cloud = image("cloud")
    cfg = config(cloud)
    # tini as PID 1: a SIGTERM before the cloud has its handlers (while it migrates) would be
    # dropped by the kernel for a PID 1 without one, and the stop would wait for SIGKILL.
    assert cfg["Entrypoint"] == [*TINI, "/opt/dockyard/bin/dockyard"]  # the unit's ExecStart
    assert cfg["Cmd"] == ["serve"]
    assert cfg["User"] == "10001:10001"  # infra/k8s runAsUser
    assert "8080/tcp" in cfg["ExposedPorts"]
    assert podman("run", "--rm", *run_options(), cloud, "--version") == f"dockyard {VERSION}"

    with fresh_database() as pg_url:
        serve_and_stop(cloud, pg_url, container_name)


def serve_and_stop(cloud: str, pg_url: str, container_name: str) -> None:
    engine = create_engine(pg_url)
    assert not migrate.is_current(engine), "a new, empty database"
    port = free_port()
    env = {
        "DOCKYARD_DATABASE_URL": pg_url,
        "DOCKYARD_SECRET_KEY": SECRET,
        "DOCKYARD_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "DOCKYARD_PORT": str(port),
        "DOCKYARD_ENVIRONMENT": "production",
        "DOCKYARD_LOG_FORMAT": "json",
    }
    args = [f"--env={k}={v}" for k, v in env.items()]
    # Host networking: the machine's PostgreSQL listens on loopback only.
    podman("run", "-d", "--name", container_name, "--network", "host", *run_options(), *args, cloud)
    base = f"http://127.0.0.1:{port}"

    def ready() -> httpx.Response | None:
        try:
            r = httpx.get(f"{base}/readyz", timeout=5)
        except httpx.TransportError:
            return None
        return r if r.status_code == 200 else None

    try:
        assert eventually(ready, timeout=90, interval=0.5, what="/readyz").json() == {"ready": True}
    except AssertionError:
        print(podman("logs", container_name))
        raise
    assert httpx.get(f"{base}/livez", timeout=5).json() == {"live": True}
    metrics = httpx.get(f"{base}/metrics", timeout=5).text
    assert "dockyard_held_polls 0.0" in metrics
    # The wheel carried the portal `make` built (cloud/portal/static is never committed).
    portal = httpx.get(f"{base}/portal/", timeout=5)
    assert portal.status_code == 200
    assert "<html" in portal.text.lower()
    try:
        assert migrate.is_current(engine), "serve brought the new database to the newest schema"
    finally:
        engine.dispose()

    podman("stop", "-t", "30", container_name, timeout=60)
    (state,) = json.loads(podman("inspect", container_name))
    assert state["State"]["ExitCode"] == 0
    logs = subprocess.run(
        ["podman", "logs", container_name], capture_output=True, text=True, timeout=60
    ).stderr  # the cloud logs to its standard error
    assert "Traceback" not in logs
    records = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert records, "JSON log lines, as DOCKYARD_LOG_FORMAT=json asks"
    assert "Application shutdown complete." in [r.get("event") for r in records]


def test_the_agent_image_starts_its_entry_point_with_the_c_chunker() -> None:
    agent = image("agent")
    cfg = config(agent)
    assert cfg["Entrypoint"] == [*TINI, "/opt/dockyard/bin/dockyard-agent"]
    assert cfg["Cmd"] == ["--state", "/var/lib/dockyard-agent", "run"]
    opts = run_options()
    assert podman("run", "--rm", *opts, agent, "--version") == f"dockyard-agent {VERSION}"
    probe = "import dockyard.agent.vault._cdc, boto3, pyVmomi; print('ok')"
    out = podman(
        "run", "--rm", *opts, "--entrypoint", "/opt/dockyard/bin/python", agent, "-c", probe
    )
    assert out == "ok"
    # The thin agent: none of the cloud's stack is in its image.
    absent = "import importlib.util as u; print(u.find_spec('sqlalchemy') is None)"
    out = podman(
        "run", "--rm", *opts, "--entrypoint", "/opt/dockyard/bin/python", agent, "-c", absent
    )
    assert out == "True"
    # `status` on the image's empty state folder, as the image's user.
    status = podman("run", "--rm", *opts, agent, "--state", "/var/lib/dockyard-agent", "status")
    assert status.startswith("standalone (not docked)")
