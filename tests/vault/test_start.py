"""What `dockyard-agent vault restore` loads before its work: only what a restore needs.

The fixed start of a command is part of every restore's time (bench/README.md); the
modules named here were a good part of it and serve other commands only."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from dockyard.agent.vault import cli as vault_cli
from dockyard.agent.vault import maintenance
from dockyard.agent.vault.backends import LocalBackend
from dockyard.agent.vault.repository import Repository, Source

from .conftest import FAST, PASS, vm_like

NOT_FOR_A_RESTORE = (
    "importlib.metadata",  # `--version` only
    "tqdm",  # a progress bar, not drawn with --no-progress
    "dockyard.agent.vault.maintenance",
    "dockyard.agent.vault.repair",
    "dockyard.agent.vault.retention",
    "dockyard.agent.runner",
    "dockyard.agent.modules",
    "pydantic",
    "httpx",
)

PROBE = """
import sys
from dockyard.agent.cli import main
code = main(sys.argv[1:])
import json
print(json.dumps({"code": code, "loaded": [m for m in %r if m in sys.modules]}))
"""


def test_a_restore_loads_nothing_it_does_not_use(tmp_path: Path) -> None:
    repo = Repository.init(LocalBackend(tmp_path / "repo"), PASS, cost=FAST)
    data = vm_like(600_000, 3)
    snap, _ = repo.store([Source("d.img", lambda: io.BytesIO(data), len(data), 0o600, 1.0)])
    secret = tmp_path / "pass"
    secret.write_text(PASS)
    args = ["vault", "--repo", str(tmp_path / "repo"), "--passphrase-file", str(secret)]
    args += ["--no-progress", "--no-cache", "restore", snap.id, "--target", str(tmp_path / "out")]
    done = subprocess.run(
        [sys.executable, "-c", PROBE % (NOT_FOR_A_RESTORE,), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "loaded": []}
    assert (tmp_path / "out" / "d.img").read_bytes() == data


def test_prunes_default_grace_is_maintenances() -> None:
    assert vault_cli.GRACE_HOURS * 3600 == maintenance.GRACE_S


def test_the_command_ends_at_once_with_its_output_and_files_whole(tmp_path: Path) -> None:
    """Run as the command, `vault` ends through `os._exit` (`cli._end_now`): its output
    is still flushed, its exit code kept, and what it restored is whole."""
    repo = Repository.init(LocalBackend(tmp_path / "repo"), PASS, cost=FAST)
    data = vm_like(800_000, 4)
    snap, _ = repo.store([Source("d.img", lambda: io.BytesIO(data), len(data), 0o600, 1.0)])
    secret = tmp_path / "pass"
    secret.write_text(PASS)
    agent = str(Path(sys.executable).parent / "dockyard-agent")
    base = [agent, "vault", "--repo", str(tmp_path / "repo"), "--passphrase-file", str(secret)]
    restore = [*base, "--json", "restore", snap.id, "--target", str(tmp_path / "out")]
    done = subprocess.run(restore, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"snapshot": snap.id, "bytes": len(data)}
    assert (tmp_path / "out" / "d.img").read_bytes() == data
    missing = subprocess.run(
        [*base, "restore", "0" * 32, "--target", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 1
    assert missing.stderr.startswith("dockyard-agent vault: ")
    assert missing.stderr.endswith("\n")
