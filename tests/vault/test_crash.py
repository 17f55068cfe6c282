"""kill -9 at every named crash point of store, prune and repair, one case per point, on a
local directory and on S3 (SeaweedFS), through the CLI in a real process.

Each case builds the same small repository: snapshot s1 of "vm" holds a log and a disk,
s2 of "vm" the disk after a change, so `prune --keep-last 1` really forgets s1 (the log's
chunks die, and packs shared by the two files are repacked). The command under test is
killed the first time it passes its point; the test fails if it was not. Afterwards
`check --read-data` is clean, every kept snapshot restores byte-exact, and the same
command run again completes and leaves the repository clean.
"""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from dockyard.agent.crashpoints import VAULT_POINTS
from dockyard.agent.vault.backends import Backend, LocalBackend, S3Backend
from dockyard.agent.vault.chunker import ChunkerParams
from dockyard.agent.vault.maintenance import check
from dockyard.agent.vault.packs import pack_key
from dockyard.agent.vault.repository import Repository, Source

from ..peers.seaweed import ACCESS_KEY, SECRET_KEY
from ..procs import BIN
from .conftest import FAST, PASS, vm_like

PARAMS = ChunkerParams(min_size=8 * 1024, avg_size=32 * 1024, max_size=128 * 1024)
DISK = vm_like(1_200_000, 90)
LOG = random.Random(91).randbytes(150_000)
CHANGED = DISK[:500_000] + random.Random(92).randbytes(300_000) + DISK[500_000:]
NEWER = CHANGED[:900_000] + random.Random(93).randbytes(400_000) + CHANGED[900_000:]


def command(point: str) -> list[str]:
    if point.startswith("prune_"):
        return ["prune", "--keep-last", "1", "--grace", "0"]
    if point.startswith("repair_index"):
        return ["repair", "index"]
    if point.startswith("repair_snapshot"):
        return ["repair", "snapshots"]
    return ["store", "{newer}", "--name", "vm"]


def put(repo: Repository, files: dict[str, bytes]) -> str:
    sources = [Source(n, lambda d=d: io.BytesIO(d), len(d)) for n, d in files.items()]
    return repo.store(sources, name="vm")[0].id


@pytest.fixture(params=["dir", "s3"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Backend, str, dict[str, str]]:
    """A back end, its location for the CLI, and the environment the CLI needs for it."""
    if request.param == "dir":
        return LocalBackend(tmp_path / "repo"), str(tmp_path / "repo"), {}
    seaweed = request.getfixturevalue("seaweed")
    bucket = f"crash-{uuid.uuid4().hex[:12]}"
    seaweed.client().create_bucket(Bucket=bucket)
    backend = S3Backend(
        bucket, "r", endpoint_url=seaweed.endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY
    )
    env = {
        "DOCKYARD_S3_ENDPOINT": seaweed.endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    }
    return backend, f"s3://{bucket}/r", env


@pytest.mark.parametrize("point", VAULT_POINTS)
def test_kill_9_at_every_point_leaves_every_kept_snapshot_whole(
    point: str, place: tuple[Backend, str, dict[str, str]], tmp_path: Path
) -> None:
    backend, location, env = place
    # One worker, so the packs are laid out the same in every run: the log's chunks
    # (dead once s1 is forgotten) share the first pack with the disk's, which prune must
    # then copy out.
    repo = Repository.init(
        backend, PASS, params=PARAMS, pack_bytes=256 * 1024, cost=FAST, workers=1
    )
    expected: dict[str, dict[str, bytes]] = {}
    s1 = put(repo, {"app.log": LOG, "disk.img": DISK})
    expected[s1] = {"app.log": LOG, "disk.img": DISK}
    s2 = put(repo, {"disk.img": CHANGED})
    expected[s2] = {"disk.img": CHANGED}
    damaged = _damage_for(point, repo, backend, s2)

    newer = tmp_path / "disk.img"
    newer.write_bytes(NEWER)
    secret = tmp_path / "pass"
    secret.write_text(PASS)
    cli = [str(BIN / "dockyard-agent"), "vault", "--repo", location]
    cli += ["--passphrase-file", str(secret), "--no-progress"]
    args = [a.replace("{newer}", str(newer)) for a in command(point)]
    crash = os.environ | env | {"DOCKYARD_VAULT_CRASH_AT": f"{point}:1"}
    killed = subprocess.run([*cli, *args], env=crash, capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, (
        f"{point} was never reached by `{' '.join(args)}`: {killed.stderr.decode()[-2000:]}"
    )

    if not damaged:  # store and prune start from a whole repository: it stays whole
        _assert_whole(Repository.open(backend, passphrase=PASS), expected)
    again = subprocess.run([*cli, *args], env=os.environ | env, capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    fresh = Repository.open(backend, passphrase=PASS)
    if point.startswith("repair_snapshot"):
        copies = [s.meta.get("repaired_from") for s in fresh.snapshots()]
        assert s2 in copies, "the snapshot that lost a pack was rewritten"
    _assert_whole(fresh, expected)


def _damage_for(point: str, repo: Repository, backend: Backend, s2: str) -> bool:
    """Repair cases start from damage: a deleted index file (repair index), or a pack s2
    needs deleted (repair snapshots; s1 may need it too, as chunk boundaries follow the
    repository's random key). True when damage was made."""
    if point.startswith("repair_index"):
        backend.delete(f"index/{sorted(repo.index_files)[-1]}")
        return True
    if point.startswith("repair_snapshot"):
        entry = repo.snapshot(s2).files[0]
        backend.delete(pack_key(repo.index[entry.chunks[len(entry.chunks) // 2]].pack))
        return True
    return False


def _assert_whole(repo: Repository, expected: dict[str, dict[str, bytes]]) -> None:
    """check --read-data is clean and every snapshot restores byte-exact: an original
    as stored, a repaired copy as its original with exactly its named lost ranges zeros,
    and the store under test's new snapshot as NEWER."""
    report = check(repo, read_data=True)
    assert report.ok, report.errors
    for snap in repo.snapshots():
        origin = snap.meta.get("repaired_from")
        files = dict(expected[origin] if origin else expected.get(snap.id, {"disk.img": NEWER}))
        for path, ranges in snap.meta.get("lost", {}).items():
            data = bytearray(files[path])
            for offset, length in ranges:
                data[offset : offset + length] = bytes(length)
            files[path] = bytes(data)
        for entry in snap.files:
            out = io.BytesIO()
            repo.restore_stream(snap.id, entry.path, out)
            assert out.getvalue() == files[entry.path], f"{snap.id[:8]}/{entry.path} differs"
