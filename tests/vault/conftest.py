"""Vault tests: small, fast key slots (scrypt at N=2^14), data made on the spot."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from dockyard.agent.vault.backends import LocalBackend
from dockyard.agent.vault.chunker import ChunkerParams
from dockyard.agent.vault.crypto import ScryptCost
from dockyard.agent.vault.repository import Repository

FAST = ScryptCost(n=2**14, r=8, p=1)
PASS = "correct horse battery staple"
# Small chunks and packs, so a few MiB exercise many chunks and several packs.
SMALL = ChunkerParams(min_size=16 * 1024, avg_size=64 * 1024, max_size=256 * 1024)


def vm_like(size: int, seed: int) -> bytes:
    """Random blocks, zero runs and text: roughly what a VM disk holds."""
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        kind = rng.random()
        n = rng.randint(4096, 256 * 1024)
        if kind < 0.5:
            out += rng.randbytes(n)
        elif kind < 0.75:
            out += bytes(n)
        else:
            words = [b"disk", b"sector", b"kernel", b"log", b"entry", b"error", b"user"]
            out += b" ".join(rng.choice(words) for _ in range(n // 6))[:n]
    return bytes(out[:size])


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(
        LocalBackend(tmp_path / "repo"), PASS, params=SMALL, pack_bytes=1024 * 1024, cost=FAST
    )
