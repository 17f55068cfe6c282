"""`dockyard-agent vault ...`: the vault from a shell.

The passphrase comes from `--passphrase-file`, the `DOCKYARD_VAULT_PASSPHRASE` variable or
a prompt; a recovery key from `--recovery-key-file`. Neither is ever an argument, where
every user of the host could read it in the process list.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .backends import Backend, open_backend
from .errors import VaultError, WrongKey
from .maintenance import check, prune
from .repository import Repository, Source, stream_source
from .retention import Retention


def add_parser(sub: Any) -> None:
    vault = sub.add_parser("vault", help="deduplicated, encrypted storage of large files")
    vault.add_argument(
        "--repo", required=True, help="repository: a directory or s3://bucket/prefix"
    )
    vault.add_argument("--passphrase-file", type=Path)
    vault.add_argument("--recovery-key-file", type=Path, help="open with the recovery key")
    vault.add_argument("--json", action="store_true", help="machine-readable output")
    vault.add_argument("--no-progress", action="store_true")
    cmd = vault.add_subparsers(dest="vault_command", required=True)
    cmd.add_parser("init", help="create a repository (asks for a passphrase)")
    store = cmd.add_parser("store", help="store files (or - for standard input) as a snapshot")
    store.add_argument("paths", nargs="+")
    store.add_argument("--name", default="")
    store.add_argument("--tag", action="append", default=[])
    store.add_argument("--stdin-name", default="stdin", help="the name of standard input")
    store.add_argument(
        "--rescan",
        action="store_true",
        help="read every file, even those unchanged since this host's newest snapshot",
    )
    restore = cmd.add_parser("restore", help="restore a snapshot, or files of it")
    restore.add_argument("snapshot")
    restore.add_argument("--target", type=Path, help="directory to restore into")
    restore.add_argument("--path", action="append", help="only this file (repeatable)")
    restore.add_argument("--stdout", metavar="PATH", help="write one file to standard output")
    restore.add_argument(
        "--no-sparse",
        action="store_true",
        help="write runs of zeros out in full instead of leaving holes (preallocated images)",
    )
    cmd.add_parser("ls", help="list snapshots")
    cmd.add_parser("verify", help="read back every pack and check every blob")
    prune = cmd.add_parser("prune", help="forget snapshots by a retention rule; reclaim space")
    for unit in ("last", "daily", "weekly", "monthly"):
        prune.add_argument(f"--keep-{unit}", type=int, default=0)
    prune.add_argument("--dry-run", action="store_true", help="say what would be forgotten")
    prune.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the lock")
    chk = cmd.add_parser("check", help="is every snapshot's data indexed and present?")
    chk.add_argument("--read-data", action="store_true", help="also read every pack header")
    pin = cmd.add_parser("pin", help="keep a snapshot whatever prune's rule says")
    pin.add_argument("snapshot")
    pin.add_argument("--reason", default="pinned by hand")
    rel = cmd.add_parser("release", help="undo a pin; prune's rule applies again")
    rel.add_argument("snapshot")
    key = cmd.add_parser("key", help="key slots: list, add-recovery, add-passphrase")
    key.add_argument("action", choices=["list", "add-recovery", "add-passphrase"])


def _secret(path: Path | None, env: str, prompt: str, confirm: bool = False) -> str:
    if path is not None:
        return path.read_text().strip()
    if os.environ.get(env):
        return os.environ[env]
    if not sys.stdin.isatty():
        raise VaultError(f"give --passphrase-file or set {env} (no terminal to ask on)")
    first = getpass.getpass(prompt)
    if confirm and getpass.getpass("again: ") != first:
        raise VaultError("the two entries differ")
    return first


def _open(args: argparse.Namespace, backend: Backend) -> Repository:
    if args.recovery_key_file is not None:
        return Repository.open(backend, recovery_key=args.recovery_key_file.read_text().strip())
    phrase = _secret(args.passphrase_file, "DOCKYARD_VAULT_PASSPHRASE", "passphrase: ")
    return Repository.open(backend, passphrase=phrase)


@contextmanager
def _bar(args: argparse.Namespace, total: int, what: str) -> Iterator[Any]:
    with tqdm(
        total=total or None,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=what,
        disable=args.no_progress or args.json,
        file=sys.stderr,
    ) as bar:
        yield bar


def run(args: argparse.Namespace) -> int:
    backend = open_backend(args.repo)
    out: dict[str, Any]
    if args.vault_command == "init":
        phrase = _secret(
            args.passphrase_file, "DOCKYARD_VAULT_PASSPHRASE", "new passphrase: ", confirm=True
        )
        repo = Repository.init(backend, phrase)
        out = {"repository": repo.id, "path": args.repo}
        _print(args, out, f"created repository {repo.id} in {args.repo}")
        return 0
    repo = _open(args, backend)
    if args.vault_command == "store":
        sources = [s for p in args.paths for s in _sources(p, args.stdin_name)]
        total = sum(s.size for s in sources)
        with _bar(args, total, "store") as bar:
            snap, stats = repo.store(
                sources, name=args.name, tags=args.tag, progress=bar.update, rescan=args.rescan
            )
        out = {"snapshot": snap.id, **stats.__dict__}
        _print(
            args,
            out,
            f"snapshot {snap.id[:8]}: {stats.files} file(s) ({stats.files_unchanged} unchanged),"
            f" {stats.bytes_read} bytes read, "
            f"{stats.new_chunks} of {stats.chunks} chunks new, "
            f"{stats.new_bytes_stored} bytes added",
        )
    elif args.vault_command == "restore":
        if args.stdout:
            repo.restore_stream(args.snapshot, args.stdout, sys.stdout.buffer)
            return 0
        if args.target is None:
            raise VaultError("give --target DIR, or --stdout PATH for one file")
        snap = repo.snapshot(args.snapshot)
        wanted = set(args.path) if args.path else None
        total = sum(f.size for f in snap.files if wanted is None or f.path in wanted)
        with _bar(args, total, "restore") as bar:
            repo.restore(
                snap.id,
                args.target,
                paths=args.path,
                progress=bar.update,
                sparse=not args.no_sparse,
            )
        _print(args, {"snapshot": snap.id, "bytes": total}, f"restored {total} bytes")
    elif args.vault_command == "ls":
        snaps = repo.snapshots()
        rows: list[dict[str, Any]] = [
            {
                "id": s.id,
                "time": s.time,
                "host": s.host,
                "name": s.name,
                "tags": s.tags,
                "files": len(s.files),
                "size": s.size,
                "pinned": s.pinned,
            }
            for s in snaps
        ]
        if args.json:
            print(json.dumps(rows, indent=1))
        else:
            for r in rows:
                pin = " pinned" if r["pinned"] else ""
                print(f"{r['id'][:8]}  {r['time'][:19]}  {r['size']:>14}  {r['name']}{pin}")
    elif args.vault_command == "verify":
        with _bar(args, 0, "verify") as bar:
            report = repo.verify(progress=bar.update)
        ok = not report["problems"]
        _print(
            args,
            report,
            f"{report['packs']} packs, {report['blobs']} blobs: "
            + ("all intact" if ok else f"{len(report['problems'])} problem(s)"),
        )
        for problem in report["problems"]:
            print(f"  {problem}", file=sys.stderr)
        return 0 if ok else 3
    elif args.vault_command == "prune":
        any_rule = args.keep_last or args.keep_daily or args.keep_weekly or args.keep_monthly
        rule = (
            Retention(args.keep_last, args.keep_daily, args.keep_weekly, args.keep_monthly)
            if any_rule
            else None
        )
        pruned = prune(repo, rule, dry_run=args.dry_run, lock_timeout=args.wait)
        verb = "would forget" if args.dry_run else "forgot"
        _print(
            args,
            pruned.__dict__,
            f"{verb} {len(pruned.forgotten)} snapshot(s), kept {pruned.kept}; "
            f"deleted {pruned.packs_deleted} pack(s) ({pruned.bytes_freed} bytes), "
            f"wrote {pruned.packs_written}",
        )
    elif args.vault_command == "check":
        result = check(repo, read_packs=args.read_data)
        _print(
            args,
            {**result.__dict__, "ok": result.ok},
            f"{result.snapshots} snapshot(s), {result.packs} pack(s), "
            f"{result.unreferenced_packs} unreferenced: "
            + ("no errors" if result.ok else f"{len(result.errors)} error(s)"),
        )
        for error in result.errors:
            print(f"  {error}", file=sys.stderr)
        return 0 if result.ok else 3
    elif args.vault_command == "pin":
        repo.pin(args.snapshot, args.reason)
        _print(args, {"pinned": args.snapshot}, f"pinned {args.snapshot}")
    elif args.vault_command == "release":
        repo.release(args.snapshot)
        _print(args, {"released": args.snapshot}, f"released {args.snapshot}")
    elif args.vault_command == "key":
        if args.action == "list":
            _print(
                args,
                {"slots": repo.slots()},
                "\n".join(f"{s['id']}  {s['kind']}" for s in repo.slots()),
            )
        elif args.action == "add-recovery":
            key = repo.add_recovery_key()
            _print(
                args,
                {"recovery_key": key},
                f"recovery key (shown once; keep it away from this machine):\n{key}",
            )
        else:
            phrase = _secret(None, "DOCKYARD_VAULT_NEW_PASSPHRASE", "new passphrase: ", True)
            repo.add_passphrase(phrase)
            _print(args, {"slots": repo.slots()}, "added a passphrase slot")
    return 0


def _sources(path: str, stdin_name: str) -> list[Source]:
    """Standard input, a file, or every file under a directory (named relative to it)."""
    if path == "-":
        return [stream_source(stdin_name, sys.stdin.buffer)]
    root = Path(path)
    if root.is_dir():
        files = sorted(f for f in root.rglob("*") if f.is_file() and not f.is_symlink())
        return [Source.from_path(f, f"{root.name}/{f.relative_to(root).as_posix()}") for f in files]
    if not root.is_file():
        raise VaultError(f"{path}: no such file or directory")
    return [Source.from_path(root)]


def _print(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data) if args.json else text)


def main_guard(args: argparse.Namespace) -> int:
    try:
        return run(args)
    except WrongKey as e:
        print(f"dockyard-agent vault: {e}", file=sys.stderr)
        return 4
    except VaultError as e:
        print(f"dockyard-agent vault: {e}", file=sys.stderr)
        return 1
