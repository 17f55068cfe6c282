"""kill -9 during store and prune, at seeded points, on real processes (the CLI): after each
kill every complete snapshot restores bit-exact and nothing refers to a missing pack.

The seed comes from DOCKYARD_TEST_SEED (printed on failure), so a failing run replays.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import signal
import subprocess
from pathlib import Path

from dockyard.agent.crashpoints import VAULT_POINTS
from dockyard.agent.vault.backends import LocalBackend
from dockyard.agent.vault.chunker import ChunkerParams
from dockyard.agent.vault.maintenance import check
from dockyard.agent.vault.repository import Repository

from ..procs import BIN
from .conftest import FAST, PASS, vm_like

STORE_POINTS = [p for p in VAULT_POINTS if not p.startswith("prune_")]
PRUNE_POINTS = [p for p in VAULT_POINTS if p.startswith("prune_")]
KILLS_WANTED = 20


def test_kill_9_at_seeded_points_leaves_every_snapshot_whole(tmp_path: Path) -> None:
    seed = int(os.environ.get("DOCKYARD_TEST_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    params = ChunkerParams(min_size=8 * 1024, avg_size=32 * 1024, max_size=128 * 1024)
    backend = LocalBackend(tmp_path / "repo")
    Repository.init(backend, PASS, params=params, pack_bytes=256 * 1024, cost=FAST)
    secret = tmp_path / "pass"
    secret.write_text(PASS)
    cli = [str(BIN / "dockyard-agent"), "vault", "--repo", str(tmp_path / "repo")]
    cli += ["--passphrase-file", str(secret), "--no-progress"]

    base = vm_like(1_500_000, seed)
    expected: dict[str, str] = {}  # snapshot name -> sha256 of the file it holds
    kills: list[str] = []
    runs = 0
    while len(kills) < KILLS_WANTED:
        runs += 1
        assert runs <= 45, f"seed {seed}: only {len(kills)} kills in {runs} runs"
        prune_now = runs > 3 and rng.random() < 0.35
        if prune_now:
            point = rng.choice(PRUNE_POINTS)
            args = ["prune", "--keep-last", str(rng.randint(1, 3))]
        else:
            point = rng.choice(STORE_POINTS)
            at = rng.randrange(len(base))
            # New bytes in the middle, enough for a few new packs of 256 KiB.
            data = base[:at] + rng.randbytes(rng.randint(1, 900_000)) + base[at:]
            name = f"v{runs}"
            path = tmp_path / "disk.img"
            path.write_bytes(data)
            expected[name] = hashlib.sha256(data).hexdigest()
            args = ["store", str(path), "--name", name]
        # Points passed once per run get 1; those passed per pack, 1 to 3.
        count = rng.randint(1, 3) if point.endswith(("pack_put", "pack_delete")) else 1
        env = os.environ | {"DOCKYARD_VAULT_CRASH_AT": f"{point}:{count}"}
        done = subprocess.run([*cli, *args], env=env, capture_output=True, timeout=60)
        if done.returncode == -signal.SIGKILL:
            kills.append(f"{args[0]}@{point}:{count}")
        else:
            assert done.returncode == 0, f"seed {seed}: {done.stderr.decode()}"

        repo = Repository.open(backend, passphrase=PASS)
        report = check(repo, read_data=True)
        assert report.ok, f"seed {seed}, after {kills[-1:]}: {report.errors}"
        for snap in repo.snapshots():
            out = io.BytesIO()
            repo.restore_stream(snap.id, "disk.img", out)
            digest = hashlib.sha256(out.getvalue()).hexdigest()
            assert digest == expected[snap.name], f"seed {seed}: {snap.name} differs"

    assert len({k.split("@")[1].split(":")[0] for k in kills}) >= 4, kills
    # What the kills left behind (packs no index names) is reclaimed by the next prune.
    repo = Repository.open(backend, passphrase=PASS)
    prune_all = subprocess.run(
        [*cli, "prune", "--keep-last", "1", "--grace", "0"], capture_output=True
    )
    assert prune_all.returncode == 0, prune_all.stderr
    final = check(repo, read_data=True)
    assert final.ok
    assert final.unreferenced_packs == 0
