"""A full disk, for real: a 12 MiB tmpfs mounted in a private mount namespace
(`unshare -m`, as root). A store that runs out of space fails with a clear error, and the
repository stays usable: its snapshots restore, check passes, prune reclaims the partial
store's packs, and a store that fits succeeds.

Without root (a contributor's laptop) this test cannot mount and says so in its failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import FAST, PASS

SCRIPT = """
import io, os, random, sys
from pathlib import Path
from dockyard.agent.vault.backends import LocalBackend
from dockyard.agent.vault.crypto import ScryptCost
from dockyard.agent.vault.errors import NoSpace
from dockyard.agent.vault.maintenance import check, prune
from dockyard.agent.vault.repository import Repository, Source

root = Path(sys.argv[1])
backend = LocalBackend(root / "repo")
repo = Repository.init(
    backend, {passphrase!r}, pack_bytes=1024 * 1024, cost=ScryptCost(n={n}, r=8, p=1)
)
rng = random.Random(3)
small = rng.randbytes(2 * 1024 * 1024)
snap, _ = repo.store([Source("small", lambda: io.BytesIO(small))])
big = rng.randbytes(24 * 1024 * 1024)
try:
    repo.store([Source("big", lambda: io.BytesIO(big))])
    print("NO ERROR")
except NoSpace as e:
    print("NOSPACE", e)
again = Repository.open(backend, passphrase={passphrase!r})
out = io.BytesIO()
again.restore_stream(snap.id, "small", out)
assert out.getvalue() == small, "the earlier snapshot restores"
assert check(again, read_data=True).ok
assert [s.id for s in again.snapshots()] == [snap.id], "no half snapshot"
report = prune(again, None, grace_s=0)  # no store runs elsewhere: no grace needed
print("RECLAIMED", report.packs_deleted)
more = rng.randbytes(3 * 1024 * 1024)
snap2, _ = again.store([Source("more", lambda: io.BytesIO(more))])
out = io.BytesIO()
again.restore_stream(snap2.id, "more", out)
assert out.getvalue() == more
print("USABLE")
"""


def test_a_full_disk_is_a_clear_error_and_the_repository_stays_usable(tmp_path: Path) -> None:
    assert os.geteuid() == 0, "this test mounts a tmpfs: run it as root (CI does)"
    assert shutil.which("unshare"), "needs unshare (util-linux)"
    mount = tmp_path / "small"
    mount.mkdir()
    script = SCRIPT.format(passphrase=PASS, n=FAST.n)
    inner = f'mount -t tmpfs -o size=12m tmpfs {mount} && exec {sys.executable} -c "$0" {mount}'
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", inner, script],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("NOSPACE no space left in"), lines
    assert lines[1].startswith("RECLAIMED ")
    assert int(lines[1].split()[1]) >= 1, "the partial store's packs were reclaimed"
    assert lines[-1] == "USABLE"
