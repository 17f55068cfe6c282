"""`dockyard-agent vault ...`: the vault from a shell.

The passphrase comes from `--passphrase-file`, the `DOCKYARD_VAULT_PASSPHRASE` variable or
a prompt; a recovery key from `--recovery-key-file`. Neither is ever an argument, where
every user of the host could read it in the process list.

Exit codes (also in agent/vault/README.md), so scripts can tell outcomes apart:
0 done; 1 failed (the message says what, and nothing was half written); 2 bad arguments;
3 damage found (`check`, `verify`) or a step refused because of damage (`prune`);
4 wrong key; 5 restored with holes (`restore --salvage`); 6 no space; 7 locked by another
process; 10 no repository, or its config is missing.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..commandline import table
from . import files_cache
from .backends import Backend, open_backend
from .errors import (
    ConfigMissing,
    Corrupted,
    IncompleteRestore,
    Locked,
    NoSpace,
    NotARepository,
    RepositoryDamaged,
    Salvaged,
    VaultError,
    WrongKey,
)
from .repository import Repository, Source, stream_source

# Each command imports what only it needs (maintenance, repair, retention, the progress
# bar): a restore starts without them (tests/vault/test_start.py; bench/README.md).
GRACE_HOURS = 24.0
"""prune's default `--grace`; `maintenance.GRACE_S` in hours (a test holds them equal)."""

EXIT_FAILED, EXIT_DAMAGE, EXIT_KEY, EXIT_HOLES, EXIT_NO_SPACE, EXIT_LOCKED = 1, 3, 4, 5, 6, 7
EXIT_NO_REPOSITORY = 10


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """`vault` and its commands; each names its handler (`vault_run`, see `run`)."""
    vault: argparse.ArgumentParser = sub.add_parser(
        "vault", help="deduplicated, encrypted storage of large files"
    )
    vault.add_argument(
        "--repo", required=True, help="repository: a directory or s3://bucket/prefix"
    )
    vault.add_argument("--passphrase-file", type=Path)
    vault.add_argument("--recovery-key-file", type=Path, help="open with the recovery key")
    vault.add_argument("--json", action="store_true", help="machine-readable output")
    vault.add_argument("--no-progress", action="store_true")
    vault.add_argument(
        "--cache",
        type=Path,
        help="the files cache's folder (default $DOCKYARD_VAULT_CACHE, else "
        "$XDG_CACHE_HOME/dockyard-vault); safe to delete",
    )
    vault.add_argument(
        "--no-cache", action="store_true", help="keep no files cache on this host's disk"
    )
    cmd = vault.add_subparsers(dest="vault_command", required=True)
    cmd.add_parser("init", help="create a repository (asks for a passphrase)").set_defaults(
        vault_run=_init
    )
    store = cmd.add_parser("store", help="store files (or - for standard input) as a snapshot")
    store.add_argument("paths", nargs="+")
    store.add_argument("--name", default="")
    store.add_argument("--tag", action="append", default=[])
    store.add_argument("--stdin-name", default="stdin", help="the name of standard input")
    store.add_argument(
        "--wait",
        type=float,
        default=600.0,
        help="seconds to wait while a prune holds the repository (default 600)",
    )
    store.add_argument(
        "--rescan",
        action="store_true",
        help="read every file, even those unchanged since this host's newest snapshot",
    )
    store.set_defaults(vault_run=_opened(_store))
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
    restore.add_argument(
        "--salvage",
        action="store_true",
        help="restore damaged files in full length, their lost ranges as zeros (exit code 5)",
    )
    restore.set_defaults(vault_run=_opened(_restore))
    cmd.add_parser("ls", help="list snapshots").set_defaults(vault_run=_opened(_ls))
    verify = cmd.add_parser(
        "verify", help="read back every pack and check every blob (check --read-data)"
    )
    verify.set_defaults(vault_run=_opened(_check), read_data=True)
    prune = cmd.add_parser("prune", help="forget snapshots by a retention rule; reclaim space")
    for unit in ("last", "daily", "weekly", "monthly"):
        prune.add_argument(f"--keep-{unit}", type=int, default=0)
    prune.add_argument(
        "--dry-run", action="store_true", help="print what a real run would delete, change nothing"
    )
    prune.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the lock")
    prune.add_argument(
        "--grace",
        type=float,
        default=GRACE_HOURS,
        metavar="HOURS",
        help="leave packs no index names alone this long (a store may still run elsewhere)",
    )
    prune.set_defaults(vault_run=_opened(_prune))
    chk = cmd.add_parser("check", help="can every snapshot be restored? names what is damaged")
    chk.add_argument(
        "--read-data", action="store_true", help="also read every pack and open every blob"
    )
    chk.set_defaults(vault_run=_opened(_check))
    rep = cmd.add_parser("repair", help="repair the index, snapshots or config from what is left")
    rep.add_argument("what", choices=["index", "snapshots", "config"])
    rep.add_argument(
        "--read-data",
        action="store_true",
        help="snapshots: also read every blob, and treat damaged ones as lost",
    )
    rep.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the lock")
    rep.set_defaults(vault_run=_repair)
    pin = cmd.add_parser("pin", help="keep a snapshot whatever prune's rule says")
    pin.add_argument("snapshot")
    pin.add_argument("--reason", default="pinned by hand")
    pin.set_defaults(vault_run=_opened(_pin))
    rel = cmd.add_parser("release", help="undo a pin; prune's rule applies again")
    rel.add_argument("snapshot")
    rel.set_defaults(vault_run=_opened(_release))
    key = cmd.add_parser("key", help="key slots: list, add-recovery, add-passphrase")
    key_cmd = key.add_subparsers(dest="key_command", required=True)
    key_cmd.add_parser("list", help="the key slots").set_defaults(vault_run=_opened(_key_list))
    key_cmd.add_parser(
        "add-recovery", help="add a recovery key slot (the key is shown once)"
    ).set_defaults(vault_run=_opened(_key_add_recovery))
    key_cmd.add_parser(
        "add-passphrase", help="add a passphrase slot (asks for the new passphrase)"
    ).set_defaults(vault_run=_opened(_key_add_passphrase))
    return vault


def _secret(path: Path | None, env: str, prompt: str, confirm: bool = False) -> str:
    if path is not None:
        return _read_secret(path, "passphrase file")
    if os.environ.get(env):
        return os.environ[env]
    if not sys.stdin.isatty():
        raise VaultError(f"give --passphrase-file or set {env} (no terminal to ask on)")
    first = getpass.getpass(prompt)
    if confirm and getpass.getpass("again: ") != first:
        raise VaultError("the two entries differ")
    return first


def _read_secret(path: Path, what: str) -> str:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise VaultError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise VaultError(f"{what} {path} is a directory") from None
    except PermissionError:
        raise VaultError(f"{what} {path}: permission denied") from None
    except UnicodeDecodeError:
        raise VaultError(f"{what} {path} is not text") from None
    if not text:
        raise VaultError(f"{what} {path} is empty")
    return text


def _keys(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """The secret that opens the repository: (passphrase, recovery key), one of them."""
    if args.recovery_key_file is not None:
        return None, _read_secret(args.recovery_key_file, "recovery key file")
    return _secret(args.passphrase_file, "DOCKYARD_VAULT_PASSPHRASE", "passphrase: "), None


def _open(args: argparse.Namespace, backend: Backend) -> Repository:
    phrase, recovery = _keys(args)
    cache = None if args.no_cache else (args.cache or files_cache.default_folder())
    return Repository.open(backend, passphrase=phrase, recovery_key=recovery, cache=cache)


class _NoBar:
    def update(self, n: int) -> None:
        pass


@contextmanager
def _bar(args: argparse.Namespace, total: int, what: str) -> Iterator[Any]:
    if args.no_progress or args.json:
        yield _NoBar()  # and tqdm is not imported
        return
    from tqdm import tqdm

    with tqdm(
        total=total or None,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=what,
        file=sys.stderr,
    ) as bar:
        yield bar


Handler = Callable[[argparse.Namespace, Backend], int]


def run(args: argparse.Namespace) -> int:
    """Run the command the parser chose (`vault_run`) on the repository's back end."""
    handler: Handler = args.vault_run
    return handler(args, open_backend(args.repo))


def _opened(handler: Callable[[argparse.Namespace, Repository], int]) -> Handler:
    """A command that works on an opened repository (all but `init` and `repair config`)."""

    def opened(args: argparse.Namespace, backend: Backend) -> int:
        return handler(args, _open(args, backend))

    return opened


def _init(args: argparse.Namespace, backend: Backend) -> int:
    phrase = _secret(
        args.passphrase_file, "DOCKYARD_VAULT_PASSPHRASE", "new passphrase: ", confirm=True
    )
    repo = Repository.init(backend, phrase)
    out = {"repository": repo.id, "path": args.repo}
    _print(args, out, f"created repository {repo.id} in {args.repo}")
    return 0


def _store(args: argparse.Namespace, repo: Repository) -> int:
    sources = [s for p in args.paths for s in _sources(p, args.stdin_name)]
    total = sum(s.size for s in sources)
    with _bar(args, total, "store") as bar:
        snap, stats = repo.store(
            sources,
            name=args.name,
            tags=args.tag,
            progress=bar.update,
            rescan=args.rescan,
            lock_timeout=args.wait,
            source=args.name or _source_key(args.paths, args.stdin_name),
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
    return 0


def _ls(args: argparse.Namespace, repo: Repository) -> int:
    snaps = repo.snapshots()
    for _sid, problem in sorted(repo.damaged_snapshots.items()):
        print(
            f"dockyard-agent vault: {problem}; not listed "
            "(`vault repair snapshots` moves it aside)",
            file=sys.stderr,
        )
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
        table(
            ["id", "time", "size", "files", "pinned", "name"],
            [
                [
                    r["id"][:8],
                    r["time"][:19],
                    r["size"],
                    r["files"],
                    "yes" if r["pinned"] else "",
                    r["name"],
                ]
                for r in rows
            ],
        )
    return 0


def _check(args: argparse.Namespace, repo: Repository) -> int:
    """`check`, and `verify` (which is `check --read-data`)."""
    from .maintenance import check

    result = check(repo, read_data=args.read_data)
    _print(args, {**result.__dict__, "ok": result.ok}, result.summary())
    for error in result.errors:
        print(f"  {error}", file=sys.stderr)
    for advice in result.advice:
        print(f"  to repair: {advice}", file=sys.stderr)
    return 0 if result.ok else EXIT_DAMAGE


def _prune(args: argparse.Namespace, repo: Repository) -> int:
    from .maintenance import prune
    from .retention import Retention

    any_rule = args.keep_last or args.keep_daily or args.keep_weekly or args.keep_monthly
    rule = (
        Retention(args.keep_last, args.keep_daily, args.keep_weekly, args.keep_monthly)
        if any_rule
        else None
    )
    if args.grace < 0:
        raise VaultError("--grace is a number of hours, zero or more")
    pruned = prune(
        repo, rule, dry_run=args.dry_run, lock_timeout=args.wait, grace_s=args.grace * 3600
    )
    verb = "would" if args.dry_run else "did"
    lines = [
        f"{'would forget' if args.dry_run else 'forgot'} {len(pruned.forgotten)} "
        f"snapshot(s), kept {pruned.kept}; {verb} delete {pruned.packs_deleted} pack(s) "
        f"({pruned.bytes_freed} bytes), wrote {pruned.packs_written}, re-indexed "
        f"{pruned.packs_reindexed}; kept {pruned.young_packs_kept} unindexed pack(s) "
        f"within the grace period and {pruned.unreadable_packs_kept} unreadable"
    ]
    if not args.json:
        lines += [f"  snapshot {sid}" for sid in pruned.forgotten]
        lines += [f"  pack {pack}" for pack in pruned.deleted_packs]
    _print(args, pruned.__dict__, "\n".join(lines))
    return 0


def _pin(args: argparse.Namespace, repo: Repository) -> int:
    repo.pin(args.snapshot, args.reason)
    _print(args, {"pinned": args.snapshot}, f"pinned {args.snapshot}")
    return 0


def _release(args: argparse.Namespace, repo: Repository) -> int:
    repo.release(args.snapshot)
    _print(args, {"released": args.snapshot}, f"released {args.snapshot}")
    return 0


def _key_list(args: argparse.Namespace, repo: Repository) -> int:
    slots = repo.slots()
    if args.json:
        _print(args, {"slots": slots}, "")
    else:
        table(["id", "kind"], [[s["id"], s["kind"]] for s in slots])
    return 0


def _key_add_recovery(args: argparse.Namespace, repo: Repository) -> int:
    key = repo.add_recovery_key()
    _print(
        args,
        {"recovery_key": key},
        f"recovery key (shown once; keep it away from this machine):\n{key}",
    )
    return 0


def _key_add_passphrase(args: argparse.Namespace, repo: Repository) -> int:
    phrase = _secret(None, "DOCKYARD_VAULT_NEW_PASSPHRASE", "new passphrase: ", True)
    repo.add_passphrase(phrase)
    _print(args, {"slots": repo.slots()}, "added a passphrase slot")
    return 0


def _restore(args: argparse.Namespace, repo: Repository) -> int:
    if args.stdout:
        repo.restore_stream(args.snapshot, args.stdout, sys.stdout.buffer)
        return 0
    if args.target is None:
        raise VaultError("give --target DIR, or --stdout PATH for one file")
    snap = repo.snapshot(args.snapshot)
    wanted = set(args.path) if args.path else None
    total = sum(f.size for f in snap.files if wanted is None or f.path in wanted)
    try:
        with _bar(args, total, "restore") as bar:
            repo.restore(
                snap.id,
                args.target,
                paths=args.path,
                progress=bar.update,
                sparse=not args.no_sparse,
                salvage=args.salvage,
            )
    except Salvaged as e:
        holes = {path: [list(r) for r in ranges] for path, ranges in e.holes.items()}
        text = [f"restored {total} bytes; {e}"]
        for path, ranges in sorted(e.holes.items()):
            text += [f"  {path}: zeros at offset {off}, {n} bytes" for off, n in ranges]
        _print(args, {"snapshot": snap.id, "bytes": total, "holes": holes}, "\n".join(text))
        return EXIT_HOLES
    _print(args, {"snapshot": snap.id, "bytes": total}, f"restored {total} bytes")
    return 0


def _repair(args: argparse.Namespace, backend: Backend) -> int:
    """`repair config` works without the config, so it opens no repository; the others do."""
    from .repair import repair_config, repair_index, repair_snapshots

    if args.what == "config":
        secret, recovery = _keys(args)
        repo_id = repair_config(backend, passphrase=secret, recovery_key=recovery)
        _print(args, {"repository": repo_id}, f"restored the config of {repo_id} from its copy")
        return 0
    repo = _open(args, backend)
    if args.what == "index":
        index = repair_index(repo, lock_timeout=args.wait)
        text = [
            f"read {index.packs_read} pack header(s), indexed {index.blobs_indexed} blob(s), "
            f"replaced {index.replaced_indexes} index file(s) "
            f"({len(index.damaged_indexes)} damaged)"
        ]
        text += [f"  pack {p}: {why}" for p, why in sorted(index.unreadable_packs.items())]
        _print(args, index.__dict__, "\n".join(text))
        return EXIT_DAMAGE if index.unreadable_packs else 0
    fixed = repair_snapshots(repo, read_data=args.read_data, lock_timeout=args.wait)
    text = [
        f"rewrote {len(fixed.rewritten)} snapshot(s), moved {len(fixed.moved_aside)} aside "
        "(kept under damaged/snapshots/)"
    ]
    for old, new in sorted(fixed.rewritten.items()):
        text.append(f"  {old[:8]} -> {new[:8]}")
        for path, ranges in sorted(fixed.lost.get(old, {}).items()):
            text += [f"    {path}: lost offset {off}, {n} bytes (now zeros)" for off, n in ranges]
    lost = {
        sid: {path: [list(r) for r in ranges] for path, ranges in files.items()}
        for sid, files in fixed.lost.items()
    }
    out = {"rewritten": fixed.rewritten, "lost": lost, "moved_aside": fixed.moved_aside}
    _print(args, out, "\n".join(text))
    return 0


def _source_key(paths: list[str], stdin_name: str) -> str:
    """What an unnamed store is of, for the files cache: its paths, made absolute."""
    return "\0".join(f"-{stdin_name}" if p == "-" else os.path.abspath(p) for p in sorted(paths))


def _sources(path: str, stdin_name: str) -> list[Source]:
    """Standard input, a file, or every file under a directory (named relative to it).
    Only regular files are stored: a FIFO or device would block or never end, so one
    given by name is refused and those inside a directory are skipped and counted."""
    if path == "-":
        return [stream_source(stdin_name, sys.stdin.buffer)]
    root = Path(path)
    try:
        mode = root.stat().st_mode
    except FileNotFoundError:
        raise VaultError(f"{path}: no such file or directory") from None
    except PermissionError:
        raise VaultError(f"{path}: permission denied") from None
    if stat.S_ISDIR(mode):
        files, skipped = [], 0
        for f in sorted(root.rglob("*")):
            if f.is_symlink() or f.is_dir():
                continue
            if f.is_file():
                files.append(f)
            else:
                skipped += 1
        if skipped:
            print(
                f"dockyard-agent vault: skipped {skipped} special file(s) in {path}",
                file=sys.stderr,
            )
        return [Source.from_path(f, f"{root.name}/{f.relative_to(root).as_posix()}") for f in files]
    if not stat.S_ISREG(mode):
        kind = _special_kind(mode)
        raise VaultError(
            f"{path} is a {kind}, not a regular file: to store what it gives, pipe it in "
            f"(`... | dockyard-agent vault store - --stdin-name NAME`)"
        )
    return [Source.from_path(root)]


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def _print(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data) if args.json else text)


def main_guard(args: argparse.Namespace) -> int:
    try:
        return run(args)
    except VaultError as e:
        print(f"dockyard-agent vault: {e}", file=sys.stderr)
        if isinstance(e, IncompleteRestore):
            print(
                "  `vault restore --salvage` restores them in full, the damaged ranges as zeros",
                file=sys.stderr,
            )
        return _exit_code(e)


def _exit_code(e: VaultError) -> int:
    codes: list[tuple[type[VaultError], int]] = [
        (WrongKey, EXIT_KEY),
        (RepositoryDamaged, EXIT_DAMAGE),
        (IncompleteRestore, EXIT_DAMAGE),
        (Corrupted, EXIT_DAMAGE),
        (NoSpace, EXIT_NO_SPACE),
        (Locked, EXIT_LOCKED),
        (ConfigMissing, EXIT_NO_REPOSITORY),
        (NotARepository, EXIT_NO_REPOSITORY),
    ]
    return next((code for kind, code in codes if isinstance(e, kind)), EXIT_FAILED)


EXAMPLES = {
    "vault init": "dockyard-agent vault --repo /srv/vault --passphrase-file ~/.vault.pass init",
    "vault store": "dockyard-agent vault --repo s3://backups/vms store /var/lib/images "
    "--name images --tag weekly",
    "vault restore": "dockyard-agent vault --repo /srv/vault restore 3f2a9c1e --target /tmp/back",
    "vault ls": "dockyard-agent vault --repo /srv/vault ls --json",
    "vault verify": "dockyard-agent vault --repo /srv/vault verify",
    "vault prune": "dockyard-agent vault --repo /srv/vault prune --keep-daily 7 "
    "--keep-weekly 4 --dry-run",
    "vault check": "dockyard-agent vault --repo /srv/vault check --read-data",
    "vault repair": "dockyard-agent vault --repo /srv/vault repair index",
    "vault pin": "dockyard-agent vault --repo /srv/vault pin 3f2a9c1e --reason 'legal hold'",
    "vault release": "dockyard-agent vault --repo /srv/vault release 3f2a9c1e",
    "vault key list": "dockyard-agent vault --repo /srv/vault key list",
    "vault key add-recovery": "dockyard-agent vault --repo /srv/vault key add-recovery",
    "vault key add-passphrase": "dockyard-agent vault --repo /srv/vault key add-passphrase",
}
"""One example per command, shown under its --help (`commandline.finish`)."""
