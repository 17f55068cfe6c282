"""A store's time as the repository's history grows: 10 earlier snapshots, then 1,000.

    .venv/bin/python bench/vault_history.py [--source DIR] [--snapshots 1000] [--work DIR]

The source is a real tree already on the machine (default /usr/share/doc: thousands of
small text files). It is stored once; then other sources are stored until the repository
holds 10 snapshots, and the source's second store (nothing changed, so the files cache
decides everything) is timed from opening the repository to the snapshot written. The
history then grows to `--snapshots` by real stores of small changing sources, each adding
its snapshot, pack and index file as a day's archive would, and the same second store is
timed again. The goal (vault issue, point 8): at most 1.2x the time with 10.

The same store is also timed without the files cache on disk (`cache=None`: the file list
is rebuilt from the repository's snapshots, the way every store worked before the cache),
which is what history cost. Each figure is the median of `--repeat` runs. Last line: one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from dockyard.agent.vault.backends import LocalBackend
from dockyard.agent.vault.crypto import ScryptCost
from dockyard.agent.vault.repository import Repository, Source

PASS = "bench passphrase, not a secret"  # noqa: S105 - a throwaway repository
# The key slot's cost is paid once per open whatever the history; the bench keeps it small
# so that what it measures is the history's share.
COST = ScryptCost(n=2**14, r=8, p=1)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def tree(root: Path) -> list[Source]:
    return [
        Source.from_path(p, p.relative_to(root).as_posix())
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    ]


def second_store(repo_path: Path, source: Path, cache: Path | None, repeat: int) -> float:
    """Median seconds of open + store of the unchanged source."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        repo = Repository.open(LocalBackend(repo_path), passphrase=PASS, cache=cache)
        _, stats = repo.store(tree(source), name="source")
        times.append(time.perf_counter() - started)
        if stats.bytes_read:
            raise SystemExit(f"the second store read {stats.bytes_read} bytes: not unchanged")
    return statistics.median(times)


def grow(repo: Repository, scratch: Path, until: int) -> None:
    """Real stores of small changing sources (a config folder per host, say) until the
    repository holds `until` snapshots."""
    have = sum(1 for _ in repo.backend.list("snapshots/"))
    for i in range(have, until):
        f = scratch / "settings.conf"
        f.write_text(f"generation = {i}\n" + "option = value\n" * (i % 64))
        repo.store([Source.from_path(f)], name=f"config-{i % 40}")
        if i % 100 == 0:
            log(f"  {i} snapshots")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", type=Path, default=Path("/usr/share/doc"))
    ap.add_argument("--snapshots", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vault-history-", dir=args.work))
    try:
        repo_path, cache, scratch = work / "repo", work / "cache", work / "scratch"
        scratch.mkdir()
        repo = Repository.init(LocalBackend(repo_path), PASS, cost=COST, cache=cache)
        files = tree(args.source)
        log(f"source {args.source}: {len(files)} files, {sum(f.size for f in files)} bytes")
        repo.store(files, name="source")
        grow(repo, scratch, 10)
        few = second_store(repo_path, args.source, cache, args.repeat)
        few_nocache = second_store(repo_path, args.source, None, args.repeat)
        log(f"growing the history to {args.snapshots} snapshots")
        grow(repo, scratch, args.snapshots)
        indexes = sum(1 for _ in repo.backend.list("index/"))
        many = second_store(repo_path, args.source, cache, args.repeat)
        many_nocache = second_store(repo_path, args.source, None, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = {
        "files": len(files),
        "snapshots": args.snapshots,
        "index_files": indexes,
        "store_s_10": round(few, 3),
        "store_s_many": round(many, 3),
        "ratio": round(many / few, 2),
        "goal": 1.2,
        "without_cache_s_10": round(few_nocache, 3),
        "without_cache_s_many": round(many_nocache, 3),
        "without_cache_ratio": round(many_nocache / few_nocache, 2),
    }
    print(f"second store of {len(files)} unchanged files, median of {args.repeat}:")
    print(f"  with 10 snapshots     {few:7.3f} s")
    print(f"  with {args.snapshots} snapshots {many:7.3f} s   ratio {many / few:.2f} (goal <= 1.2)")
    print(f"  ({indexes} index files in the repository)")
    print("without the files cache (the file list rebuilt from the snapshots):")
    print(f"  with 10 {few_nocache:7.3f} s, with {args.snapshots} {many_nocache:7.3f} s")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
