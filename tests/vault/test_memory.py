"""A store's memory is bounded by its settings, not by the machine or the data: 16 workers
(on whatever cores this machine has) store 1 GiB of unique data that neither dedups nor
compresses, as two files so both lanes chunk at once, in a real process, and what the store
adds to the RSS stays under `memory_bound(16, ...)`, the formula agent/vault/README.md
documents.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dockyard.agent.vault.chunker import ChunkerParams
from dockyard.agent.vault.repository import PACK_BYTES, memory_bound

from .conftest import FAST, PASS

WORKERS = 16
SIZE = 1024 * 1024 * 1024

SCRIPT = """
import io, random, resource, sys
from pathlib import Path
from dockyard.agent.vault.backends import LocalBackend
from dockyard.agent.vault.crypto import ScryptCost
from dockyard.agent.vault.repository import Repository, Source

size, workers = int(sys.argv[2]), int(sys.argv[3])

class Unique(io.RawIOBase):
    '''Never the same block twice: a seeded generator, read as it is made.'''
    def __init__(self, seed):
        self.left, self.rng = size // 2, random.Random(seed)
    def readable(self):
        return True
    def readinto(self, b):
        n = min(len(b), self.left)
        b[:n] = self.rng.randbytes(n)
        self.left -= n
        return n

cost = ScryptCost(n={n}, r=8, p=1)
repo = Repository.init(LocalBackend(Path(sys.argv[1])), {passphrase!r}, cost=cost, workers=workers)
assert repo.workers == workers
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
# Two files, so that both of the store's lanes chunk at once.
files = [Source("unique-%d.img" % i, lambda i=i: io.BufferedReader(Unique(i), 1 << 20)) for i in (11, 12)]
snap, stats = repo.store(files)
assert stats.bytes_read == size and stats.new_chunks == stats.chunks, stats
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, before * 1024, stats.new_bytes_stored)
"""


def test_sixteen_workers_and_a_gib_of_unique_data_stay_under_the_documented_bound(
    tmp_path: Path,
) -> None:
    script = SCRIPT.format(n=FAST.n, passphrase=PASS)
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "repo"), str(SIZE), str(WORKERS)],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    peak, before, stored = (int(v) for v in out.stdout.split())
    assert stored >= SIZE, "unique random data neither dedups nor compresses"
    bound = memory_bound(WORKERS, ChunkerParams(), PACK_BYTES)
    added = peak - before
    assert added <= bound, (
        f"a store with {WORKERS} workers added {added / 2**20:.0f} MiB of RSS; "
        f"the documented bound is {bound / 2**20:.0f} MiB"
    )
    print(f"added {added / 2**20:.0f} MiB of RSS, bound {bound / 2**20:.0f} MiB")
