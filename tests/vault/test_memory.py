"""Streaming: a store's peak RSS does not grow with the size of the file.

Both runs are real processes: one stores a 64 MB stream, the other a 1 GB stream (the 64 MB
of random data passed 16 times, so the repository stays at 64 MB while every byte still goes
through the chunker and the keyed hash).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import FAST, PASS

# The documented bound (agent/vault/README.md): what a store adds to the process's RSS.
WORKING_SET_MB = 160

SCRIPT = """
import io, os, random, resource, sys
from pathlib import Path
from dockyard.agent.vault.backends import LocalBackend
from dockyard.agent.vault.crypto import ScryptCost
from dockyard.agent.vault.repository import Repository, Source

base = random.Random(7).randbytes(64 * 1024 * 1024)
passes = int(sys.argv[2])

class Repeat(io.RawIOBase):
    def __init__(self):
        self.left, self.pos = passes * len(base), 0
    def readable(self):
        return True
    def readinto(self, b):
        n = min(len(b), self.left, len(base) - self.pos)
        b[:n] = base[self.pos:self.pos + n]
        self.pos = (self.pos + n) % len(base)
        self.left -= n
        return n

cost = ScryptCost(n={n}, r=8, p=1)
repo = Repository.init(LocalBackend(Path(sys.argv[1])), {passphrase!r}, cost=cost)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
snap, stats = repo.store([Source("big.img", lambda: io.BufferedReader(Repeat(), 1 << 20))])
assert stats.bytes_read == passes * len(base), stats
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, before // 1024)
"""


def _peak_mb(tmp_path: Path, passes: int) -> tuple[int, int]:
    script = SCRIPT.format(n=FAST.n, passphrase=PASS)
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / f"repo-{passes}"), str(passes)],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    peak, before = out.stdout.split()
    return int(peak), int(before)


def test_peak_rss_is_the_same_for_64_mb_and_1_gb(tmp_path: Path) -> None:
    small, base_small = _peak_mb(tmp_path, 1)
    large, base_large = _peak_mb(tmp_path, 16)
    # The process holds the 64 MB pattern itself in both runs; what the store adds is
    # the pipeline's working set, which must stay under the bound whatever the length.
    for peak, base in ((small, base_small), (large, base_large)):
        assert peak - base <= WORKING_SET_MB, (
            f"a store added {peak - base} MB of RSS; the bound is {WORKING_SET_MB} MB "
            f"(64 MB run: {small - base_small} MB, 1 GB run: {large - base_large} MB)"
        )
