"""The vault CLI on bad input and in bad places: one clear line, the documented exit code
(agent/vault/cli.py), and nothing half written. Each case runs the real command."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import PASS, vm_like

BIN = Path(sys.executable).parent
AGENT = str(BIN / "dockyard-agent")


def _vault(
    repo: Path, *args: str, passphrase: Path | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [AGENT, "vault", "--repo", str(repo), "--no-progress"]
    if passphrase is not None:
        cmd += ["--passphrase-file", str(passphrase)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120)


def _one_line(done: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    assert done.returncode == code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str, Path]:
    """A repository with one stored file: (repo, passphrase file, snapshot, the file)."""
    root = tmp_path_factory.mktemp("cli")
    secret = root / "pass"
    secret.write_text(PASS)
    image = root / "disk.img"
    image.write_bytes(vm_like(3_000_000, 7))
    repo = root / "repo"
    assert _vault(repo, "init", passphrase=secret).returncode == 0
    done = _vault(repo, "--json", "store", str(image), passphrase=secret)
    assert done.returncode == 0, done.stderr
    return repo, secret, json.loads(done.stdout)["snapshot"], image


def test_a_missing_passphrase_file_is_one_line(
    stored: tuple[Path, Path, str, Path], tmp_path: Path
) -> None:
    repo, _, _, _ = stored
    before = _tree(repo)
    _one_line(
        _vault(repo, "ls", passphrase=tmp_path / "nope"), 1, "passphrase file", "no such file"
    )
    assert _tree(repo) == before


def test_a_repository_path_that_is_a_file_is_named_so(
    stored: tuple[Path, Path, str, Path],
) -> None:
    _, secret, _, image = stored
    before = image.read_bytes()
    _one_line(_vault(image, "ls", passphrase=secret), 10, "is a file, not a repository")
    assert image.read_bytes() == before


def test_a_deleted_config_says_so_counts_the_packs_and_repair_brings_it_back(
    stored: tuple[Path, Path, str, Path], tmp_path: Path
) -> None:
    repo, secret, snapshot, image = stored
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy)
    (copy / "config").unlink()
    packs = sum(1 for p in (copy / "data").rglob("*") if p.is_file())
    line = _one_line(
        _vault(copy, "ls", passphrase=secret), 10, "config is missing", "repair config"
    )
    assert f"holds {packs} pack(s)" in line
    _one_line(_vault(copy, "init", passphrase=secret), 1, "config is missing", "repair config")
    assert not (copy / "config").exists(), "init never writes over a damaged repository"
    assert _vault(copy, "repair", "config", passphrase=secret).returncode == 0
    back = _vault(copy, "restore", snapshot, "--target", str(tmp_path / "out"), passphrase=secret)
    assert back.returncode == 0, back.stderr
    assert (tmp_path / "out" / image.name).read_bytes() == image.read_bytes()


@pytest.mark.parametrize("kind", ["FIFO", "character device"])
def test_a_fifo_or_device_given_as_source_is_refused_before_anything_is_stored(
    stored: tuple[Path, Path, str, Path], tmp_path: Path, kind: str
) -> None:
    repo, secret, _, _ = stored
    if kind == "FIFO":
        source = tmp_path / "pipe"
        os.mkfifo(source)
    else:
        source = Path("/dev/zero")
    before = _tree(repo)
    _one_line(
        _vault(repo, "store", str(source), passphrase=secret), 1, f"is a {kind}", "pipe it in"
    )
    assert _tree(repo) == before, "no pack, index, snapshot or lock left behind"


def test_a_restore_target_that_fills_up_leaves_nothing_half_written(
    stored: tuple[Path, Path, str, Path], tmp_path: Path
) -> None:
    """A 2 MiB tmpfs (root, a private mount namespace) for a 3 MB file."""
    assert os.geteuid() == 0, "this test mounts a tmpfs: run it as root (CI does)"
    repo, secret, snapshot, _ = stored
    small = tmp_path / "small"
    small.mkdir()
    restore = [AGENT, "vault", "--repo", str(repo), "--passphrase-file", str(secret)]
    restore += ["--no-progress", "restore", snapshot, "--target", f"{small}/out"]
    script = (
        f'mount -t tmpfs -o size=2m tmpfs {small} && "$@"; rc=$?; find {small} -type f; exit $rc'
    )
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", *restore],
        capture_output=True,
        text=True,
        timeout=120,
    )
    _one_line(done, 6, "is full", "nothing half written")
    assert done.stdout.strip() == "", f"files left in the target: {done.stdout}"


def _lock(repo: Path, name: str, host: str, pid: int, expires: float) -> Path:
    path = repo / "locks" / name
    path.parent.mkdir(exist_ok=True)
    body = {"kind": "exclusive", "host": host, "pid": pid, "expires": expires}
    path.write_text(json.dumps(body))
    return path


def test_stale_locks_are_removed_and_a_live_one_is_a_clear_wait(
    stored: tuple[Path, Path, str, Path], tmp_path: Path
) -> None:
    """A killed local holder (its pid gone, its lease not yet run out) and an expired lease
    of another host are removed by the next store; a live lease of another host makes it
    wait and then give up with exit 7, naming the holder."""
    repo, secret, _, image = stored
    gone = subprocess.Popen(["true"])
    gone.wait()
    now = time.time()
    dead = _lock(repo, "a" * 32, socket.gethostname(), gone.pid, now + 3600)
    expired = _lock(repo, "b" * 32, "other-host", 4242, now - 1)
    live = _lock(repo, "c" * 32, "other-host", 4242, now + 3600)
    try:
        waited = _vault(
            repo, "store", str(image), "--name", "locks", "--wait", "0.5", passphrase=secret
        )
        _one_line(waited, 7, "locked", "other-host pid 4242")
        assert not dead.exists()
        assert not expired.exists()
        assert live.exists(), "a live lease is never removed"
    finally:
        live.unlink()
    done = _vault(repo, "store", str(image), "--name", "locks", passphrase=secret)
    assert done.returncode == 0, done.stderr
    assert not any((repo / "locks").iterdir()), "the store removed its own lock"
