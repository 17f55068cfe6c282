"""The agent installs alone, without the cloud's server stack, and docks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dockyard.cloud.store.db import Database

from ..factories import enrolment_secret, make_world
from ..procs import Agent, Cloud

ROOT = Path(__file__).resolve().parents[2]
SERVER_STACK = ("starlette", "strawberry", "sqlalchemy", "alembic", "psycopg", "uvicorn")


def test_agent_only_venv_docks(cloud: Cloud, pg: Database, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
    ]
    subprocess.run([*pip, str(ROOT)], check=True, timeout=600)
    probe = f"import importlib.util as u; print([m for m in {SERVER_STACK!r} if u.find_spec(m)])"
    found = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "[]", f"the agent install pulled in {found.stdout}"
    cloud_cli = subprocess.run(
        [str(venv / "bin" / "dockyard"), "serve"], capture_output=True, text=True
    )
    assert cloud_cli.returncode == 2
    assert "dockyard[cloud]" in cloud_cli.stderr

    world = make_world(pg)
    agent = Agent(tmp_path / "state", exe=venv / "bin" / "dockyard-agent")
    assert "docked" in agent.dock(cloud.url, enrolment_secret(world)).stdout
    assert '"docked": true' in agent.cli("status", "--json").stdout
