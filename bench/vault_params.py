"""Chunk and pack sizes for VM images, by measurement.

    .venv/bin/python bench/vault_params.py [--size-mb 512]

Builds a deterministic VM-shaped image (random blocks, zero runs, text), then a changed
copy the way VM disks change between archives: 1% of the image rewritten in clustered
4 KiB-block extents, and one insertion of 3 bytes in the middle. For each target chunk size
it reports the chunker's throughput, the chunk count (index memory grows with it), and how
many bytes the changed copy adds to a repository that holds the original (less is better
dedup). The anchor is a 1 MiB target (restic's); ratios are to it. Last line: one JSON
object.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from dockyard.agent.vault.chunker import Chunker, ChunkerParams
from dockyard.agent.vault.crypto import Keys, new_master

ROOT = Path(__file__).resolve().parent.parent
KIB = 1024
TARGETS = [256 * KIB, 512 * KIB, 1024 * KIB, 2048 * KIB, 4096 * KIB]
ANCHOR = 1024 * KIB


def image(size: int, seed: int) -> bytearray:
    rng = random.Random(seed)
    out = bytearray()
    words = [b"kernel", b"sector", b"journal", b"error", b"user", b"session", b"page"]
    while len(out) < size:
        n = rng.randint(64 * KIB, 4096 * KIB)
        kind = rng.random()
        if kind < 0.45:
            out += rng.randbytes(n)
        elif kind < 0.75:
            out += bytes(n)
        else:
            out += b" ".join(rng.choice(words) for _ in range(n // 7))[:n]
    return out[:size]


def changed(data: bytearray, seed: int) -> bytes:
    """1% of the image rewritten in 4 KiB blocks, clustered the way file systems write (a
    few dozen extents of up to 1 MiB), and 3 bytes inserted in the middle."""
    rng = random.Random(seed)
    copy = bytearray(data)
    budget = len(copy) // 100
    while budget > 0:
        extent = min(budget, rng.randint(1, 256) * 4 * KIB)
        at = rng.randrange((len(copy) - extent) // (4 * KIB)) * 4 * KIB
        copy[at : at + extent] = rng.randbytes(extent)
        budget -= extent
    mid = len(copy) // 2
    return bytes(copy[:mid] + b"new" + copy[mid:])


def candidates(data: bytes, gear: bytes) -> dict[str, float]:
    """Chunker throughput (MB/s) of the PyPI candidates beside ours, 1 MiB target, one core.
    They are installed into a folder of their own, never into the project's venv."""
    folder = ROOT / "build" / "bench-vault" / "cdc"
    if not (folder / "pyfastcdc").exists() or not (folder / "fastcdc").exists():
        pip = [sys.executable, "-m", "pip", "install", "-q", "--target", str(folder)]
        subprocess.run([*pip, "pyfastcdc", "fastcdc"], check=True)
    sys.path.insert(0, str(folder))
    import fastcdc  # type: ignore[import-not-found]
    import pyfastcdc  # type: ignore[import-not-found]

    def rate(fn: Callable[[], object]) -> float:
        started = time.perf_counter()
        fn()
        return round(len(data) / (time.perf_counter() - started) / 1e6, 1)

    ours = Chunker(
        gear, ChunkerParams(min_size=256 * KIB, avg_size=1024 * KIB, max_size=8192 * KIB)
    )
    seed = int.from_bytes(gear[:8], "little") or 1
    return {
        "dockyard (keyed table)": rate(lambda: sum(1 for _ in ours.chunks(io.BytesIO(data)))),
        "pyfastcdc 0.3 (seed XOR)": rate(
            lambda: sum(1 for _ in pyfastcdc.FastCDC(1024 * KIB, seed=seed).cut_buf(data))
        ),
        "fastcdc 1.7 (fixed table)": rate(
            lambda: sum(1 for _ in fastcdc.fastcdc(data, avg_size=1024 * KIB, fat=False))
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=int, default=512)
    args = ap.parse_args()
    original = image(args.size_mb * 1024 * KIB, 1)
    edited = changed(original, 2)
    gear = Keys(new_master()).gear
    rows = {}
    for avg in TARGETS:
        params = ChunkerParams(min_size=avg // 2, avg_size=avg, max_size=avg * 8)
        chunker = Chunker(gear, params)
        started = time.perf_counter()
        first = {hash(c): len(c) for c in chunker.chunks(io.BytesIO(original))}
        seconds = time.perf_counter() - started
        second = {hash(c): len(c) for c in chunker.chunks(io.BytesIO(edited))}
        added = sum(n for h, n in second.items() if h not in first)
        rows[avg // KIB] = {
            "chunker_mb_s": round(len(original) / seconds / 1e6, 1),
            "chunks": len(first),
            "added_mb": round(added / 1e6, 2),
        }
    cands = candidates(bytes(original[: 256 * 1024 * KIB]), gear)
    for name, mb_s in cands.items():
        print(f"chunker candidate {name:<28} {mb_s} MB/s")
    anchor = rows[ANCHOR // KIB]
    for target, row in rows.items():
        row["added_vs_1mib"] = round(row["added_mb"] / anchor["added_mb"], 3)
        row["chunks_vs_1mib"] = round(row["chunks"] / anchor["chunks"], 3)
        print(f"{target:>5} KiB  {row}")
    print(json.dumps({"image_mb": args.size_mb, "targets_kib": rows, "candidates_mb_s": cands}))


if __name__ == "__main__":
    main()
