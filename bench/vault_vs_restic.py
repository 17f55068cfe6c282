"""Our vault beside restic and borg, on the same VM-shaped data, in one run.

    .venv/bin/python bench/vault_vs_restic.py [--dataset synthetic|real|both] [--size-gb 2]
        [--data DIR] [--work DIR] [--only dockyard restic ...]

Peers are installed into a folder of their own (`<work>/peers`, default build/bench-vault):
restic 0.18 (Debian trixie's package) and 0.14 (bookworm's), unpacked with `dpkg-deb -x`;
borg 1.4 and the 2.0 beta from PyPI (built from source in their own venvs; their C
libraries' headers come from apt when missing, and borg 2's OpenSSL 3.5 is built from
Debian trixie's source, bookworm's 3.0 being too old for it) and borg 1.2 (bookworm's
package). A peer that cannot be installed is reported and left out, never silently.

For each tool: first store of the data set, a second store after inserting bytes in the
middle of the largest file, a restore of the second snapshot (checked byte for byte), and
the repository's size. The page cache is warmed with the data set before every store and
with the tool's repository before every restore, so every tool reads from the same state
(ours writes its packs around the page cache; the peers' would otherwise be cached from
their writes and ours not). Peers run at their defaults and at the settings
closest to ours (restic: compression auto; borg: -C zstd,3 and its default lz4).

Restore is timed twice: until the tool returns, and until the data is on disk (a `sync`
after it; ours fsyncs each file itself, the peers do not). The second is the fair one.
Ours leaves runs of zeros as holes by default, so each peer restores twice, at its default
and with its own `--sparse`, and the better of the two is its figure.

Two data sets (`--dataset`, default both): the synthetic one (VM-shaped: random blocks,
zero runs, repeated words, runs copied between files; made from a seed) and a real one
built from this machine's own files (`make_real_dataset`: ext4 images of system trees
made with `mke2fs -d`, one made again after files were removed and added, and a tarball
of the documentation; about 2 GB). The synthetic set flatters every tool's compression
(its text is seven words) and has no middle ground; the real one has code, binaries that
compress a little, and compressed man pages that do not.

Prints MB/s per tool and step for each data set, the ratios of ours to the best restic
and the best borg, and the raw primitives' throughput on this machine (the physical
limit). The last line is one JSON object, by data set, with every figure
(`store_vs_restic`, `store_vs_borg`, ...).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import os
import random
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MIRROR = "http://deb.debian.org/debian"
PASS = "bench passphrase, not a secret"  # noqa: S105 - a throwaway repository
MB = 1e6


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


# --- the data set --------------------------------------------------------------------------


def make_dataset(folder: Path, total: int, seed: int = 2026) -> None:
    """VM-image-shaped files: random blocks, zero runs, text, and runs copied from other
    files at shifted, unaligned offsets. Deterministic for a seed."""
    marker = folder / ".complete"
    if marker.exists() and marker.read_text().strip() == f"{total}:{seed}":
        return  # the same data set as asked for; any other size or seed makes a new one
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = random.Random(seed)
    sizes = [total * 4 // 10, total * 3 // 10, total * 2 // 10, total - total * 9 // 10]
    words = [b"kernel", b"sector", b"journal", b"error", b"user", b"session", b"page"]
    written: list[Path] = []
    for i, size in enumerate(sizes):
        path = folder / f"vm-{i}.img"
        with open(path, "wb") as f:
            done = 0
            while done < size:
                n = min(size - done, rng.randint(256 * 1024, 8 * 1024 * 1024))
                kind = rng.random()
                if kind < 0.4:
                    block = rng.randbytes(n)
                elif kind < 0.65:
                    block = bytes(n)
                elif kind < 0.85 or not written:
                    block = b" ".join(rng.choice(words) for _ in range(n // 7))[:n]
                else:  # a run another file also holds, at an unaligned offset
                    src = rng.choice(written)
                    at = rng.randrange(max(1, src.stat().st_size - n))
                    with open(src, "rb") as s:
                        s.seek(at)
                        block = s.read(n)
                f.write(block)
                done += len(block)
        written.append(path)
    (folder / ".complete").write_text(f"{total}:{seed}")


REAL_SOURCES = [
    # (image name, apparent MiB, trees): those that exist here, in order, while they fill
    # at most two thirds of the image
    ("libs", 640, ["/usr/lib/python3.11", "/usr/lib/gcc", "/usr/include", "/usr/share/locale"]),
    ("tools", 512, ["/usr/lib/go-1.19", "/usr/lib/llvm-14", "/usr/share/locale"]),
]
REAL_DOCS = ["/usr/share/doc", "/usr/share/man"]
FAKE_TIME = "1764547200"  # 2025-12-01: every image and the tarball carry this time
IMAGE_UUID = "6f1c2e0a-52d4-4d6e-9c3b-2a0d9e7b1c55"


def make_real_dataset(folder: Path, work: Path) -> None:
    """Real files already on this machine, about 2 GB apparent: ext4 images made with
    `mke2fs -d` from system trees (mostly zeros past their data, as a VM's disk is), one of
    them made again after files were removed and others added (so the same blocks sit at
    other offsets), and a tarball of the machine's documentation. Deterministic for a given
    machine: fixed UUIDs, hash seed and times, sorted tar members."""
    marker = folder / ".complete"
    if marker.exists() and marker.read_text().strip() == "real:1":
        return
    if not shutil.which("mke2fs"):
        run(["apt-get", "install", "-y", "-q", "e2fsprogs"])
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    env = os.environ | {"E2FSPROGS_FAKE_TIME": FAKE_TIME}
    for name, mib, candidates in REAL_SOURCES:
        trees, room = [], mib * 2**20 * 2 // 3
        for tree in (Path(t) for t in candidates if Path(t).is_dir()):
            size = int(run(["du", "-sb", str(tree)]).stdout.split()[0])
            if size <= room:
                trees.append(tree)
                room -= size
        if not trees:
            raise SystemExit(f"none of {candidates} exists here: no real data set")
        stage = work / f"stage-{name}"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
        for tree in trees:
            run(["cp", "-a", str(tree), str(stage / tree.name)])
        _image(stage, folder / f"{name}.img", mib, env)
        if name == "libs":  # the same file system after a round of changes
            files = sorted(p for p in stage.rglob("*") if p.is_file() and not p.is_symlink())
            for path in files[::7]:
                path.unlink()
            extra = Path("/usr/share/vim") if Path("/usr/share/vim").is_dir() else trees[0]
            run(["cp", "-a", str(extra), str(stage / "added")])
            _image(stage, folder / f"{name}-changed.img", mib, env)
        shutil.rmtree(stage, ignore_errors=True)
    docs = [d for d in REAL_DOCS if Path(d).is_dir()]
    run(
        [
            "tar", "--sort=name", f"--mtime=@{FAKE_TIME}", "--owner=0", "--group=0",
            "--numeric-owner", "-cf", str(folder / "docs.tar"), *docs,
        ]
    )  # fmt: skip
    marker.write_text("real:1")


def _image(tree: Path, image: Path, mib: int, env: dict[str, str]) -> None:
    """An ext4 image of the tree. mke2fs copies each inode's times, which the staging copy
    (ctime), any reader (atime) and the round of changes (directories' mtime) move, so all
    three are set to FAKE_TIME afterwards with debugfs: the same trees give the same
    image, byte for byte."""
    image.unlink(missing_ok=True)
    run(
        [
            "mke2fs", "-q", "-t", "ext4", "-b", "4096", "-U", IMAGE_UUID,
            "-E", f"hash_seed={IMAGE_UUID},root_owner=0:0,nodiscard",
            "-d", str(tree), str(image), f"{mib}M",
        ],
        env=env,
    )  # fmt: skip
    header = run(["dumpe2fs", "-h", str(image)], env=env).stdout
    counts = dict(
        line.split(":", 1)
        for line in header.splitlines()
        if line.startswith(("Inode count", "Free inodes"))
    )
    used = int(counts["Inode count"]) - int(counts["Free inodes"])
    commands = image.with_suffix(".debugfs")
    commands.write_text(
        "".join(
            f"sif <{ino}> {field} {FAKE_TIME}\nsif <{ino}> {field}_extra 0\n"
            for ino in range(1, used + 12)
            for field in ("ctime", "atime", "mtime")
        )
    )
    run(["debugfs", "-w", "-f", str(commands), str(image)], env=env)
    commands.unlink()


def insert_in_middle(folder: Path, work: Path) -> Path:
    """A copy of the data set with 4099 bytes inserted in the middle of its largest file."""
    changed = work / f"{folder.name}-changed"
    shutil.rmtree(changed, ignore_errors=True)
    changed.mkdir(parents=True)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != ".complete")
    largest = max(files, key=lambda p: p.stat().st_size)
    for path in files:
        if path != largest:
            os.link(path, changed / path.name)
    size = largest.stat().st_size
    with open(largest, "rb") as src, open(changed / largest.name, "wb") as dst:
        dst.write(src.read(size // 2))
        dst.write(random.Random(7).randbytes(4099))
        shutil.copyfileobj(src, dst, 16 * 1024 * 1024)
    return changed


def warm(folder: Path) -> None:
    """Read every file under `folder` into the page cache."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                while f.read(16 * 1024 * 1024):
                    pass


def digest_tree(folder: Path) -> dict[str, str]:
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != ".complete":
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(16 * 1024 * 1024):
                    h.update(chunk)
            out[path.name] = h.hexdigest()
    return out


def du(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# --- the tools -----------------------------------------------------------------------------


@dataclass
class Tool:
    name: str
    version: str
    settings: str
    init: Callable[[Path], None]
    store: Callable[[Path, Path], None]
    restore: Callable[[Path, Path], None]
    env: dict[str, str] = field(default_factory=dict)
    restore_sparse: Callable[[Path, Path], None] | None = None
    """The peer's restore that leaves zeros as holes, as ours does by default."""


def ours() -> Tool:
    secret = ROOT / "build" / "bench-vault" / "pass"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text(PASS)
    compile_agent()
    cli = [str(BIN / "dockyard-agent"), "vault", "--no-progress", "--passphrase-file", str(secret)]

    last: dict[str, str] = {}

    def store(repo: Path, data: Path) -> None:
        files = sorted(str(p) for p in data.iterdir() if p.is_file() and p.name != ".complete")
        out = run([*cli, "--repo", str(repo), "--json", "store", *files]).stdout
        last["snapshot"] = json.loads(out)["snapshot"]

    def restore(repo: Path, target: Path) -> None:
        # One command, as restic's `restore latest`: the id is known from the store.
        run([*cli, "--repo", str(repo), "restore", last["snapshot"], "--target", str(target)])

    from dockyard.agent.vault.chunker import ChunkerParams
    from dockyard.agent.vault.repository import CHUNK_LEVEL, FORMAT

    p = ChunkerParams()
    return Tool(
        "dockyard",
        f"vault format {FORMAT}",
        f"FastCDC {p.avg_size // 1024} KiB, zstd {CHUNK_LEVEL}, AES-256-GCM, keyed BLAKE3; "
        "restore sparse, fsynced",
        lambda repo: run([*cli, "--repo", str(repo), "init"]),
        store,
        restore,
    )


def compile_agent() -> None:
    """Our modules' bytecode, as pip writes it when it installs the agent. The editable
    install run here has none, and with `PYTHONDONTWRITEBYTECODE` set (as in this
    workplace's shells) every command compiled every module again: 35-40 ms of CPU in
    each start (`vault --help`, 2026-12-04), which no installed agent spends."""
    import compileall

    import dockyard.agent

    if not compileall.compile_dir(Path(dockyard.agent.__file__).parent, quiet=1):
        raise RuntimeError("the agent's modules did not compile")


def _deb(url: str, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    deb = into / url.rsplit("/", 1)[1]
    if not deb.exists():
        urllib.request.urlretrieve(url, deb)  # noqa: S310 - a fixed Debian mirror
    run(["dpkg-deb", "-x", str(deb), str(into / "root")])
    return into / "root"


def _trixie_filename(package: str, cache: Path) -> str:
    index = cache / "trixie-Packages.xz"
    if not index.exists():
        urllib.request.urlretrieve(  # noqa: S310 - a fixed Debian mirror
            f"{MIRROR}/dists/trixie/main/binary-amd64/Packages.xz", index
        )
    text = lzma.decompress(index.read_bytes()).decode()
    for stanza in text.split("\n\n"):
        if stanza.startswith(f"Package: {package}\n"):
            for line in stanza.splitlines():
                if line.startswith("Filename: "):
                    return line.split(": ", 1)[1]
    raise RuntimeError(f"{package} not in trixie")


def restic(peers: Path, which: str) -> Tool:
    folder = peers / f"restic-{which}"
    if which == "trixie":
        url = f"{MIRROR}/{_trixie_filename('restic', peers)}"
    else:
        run(["apt-get", "download", "restic"], cwd=peers)
        url = "file://" + str(next(peers.glob("restic_0.14*.deb")))
    binary = _deb(url, folder) / "usr" / "bin" / "restic"
    version = run([str(binary), "version"]).stdout.split()[1]
    env = {"RESTIC_PASSWORD": PASS, "RESTIC_CACHE_DIR": str(folder / "cache")}

    def cmd(repo: Path, *args: str) -> None:
        run([str(binary), "-r", str(repo), "--no-cache", *args], env=os.environ | env)

    def restore(repo: Path, target: Path) -> None:
        cmd(repo, "restore", "latest", "--target", str(target))

    def restore_sparse(repo: Path, target: Path) -> None:
        cmd(repo, "restore", "latest", "--sparse", "--target", str(target))

    return Tool(
        f"restic-{version}",
        version,
        "defaults (compression auto); restore also --sparse",
        lambda repo: cmd(repo, "init"),
        lambda repo, data: cmd(repo, "backup", "--compression", "auto", str(data)),
        restore,
        restore_sparse=restore_sparse,
    )


def _borg_headers() -> None:
    needed = ["libacl1-dev", "liblz4-dev", "libzstd-dev", "libxxhash-dev", "pkg-config"]
    missing = [
        pkg for pkg in needed if subprocess.run(["dpkg", "-s", pkg], capture_output=True).returncode
    ]
    if missing:
        log(f"installing build headers for borg: {' '.join(missing)}")
        run(["apt-get", "install", "-y", "--no-install-recommends", *missing])


BORG_SETTINGS = ("zstd,3", "lz4")  # the closest to ours, and borg's default


def _openssl_from_trixie(peers: Path) -> Path:
    """OpenSSL from Debian trixie's source (3.5), built as static libraries into a prefix
    of its own: borg 2 needs OpenSSL 3.2's headers and bookworm has 3.0, and trixie's
    binary packages need a newer glibc than bookworm's. Static, so the borg it is linked
    into needs nothing of it at run time. Takes some minutes once; kept afterwards."""
    prefix = peers / "openssl-trixie"
    if (prefix / "lib" / "libcrypto.a").exists():
        return prefix
    index = peers / "trixie-Sources.xz"
    if not index.exists():
        urllib.request.urlretrieve(  # noqa: S310 - a fixed Debian mirror
            f"{MIRROR}/dists/trixie/main/source/Sources.xz", index
        )
    text = lzma.decompress(index.read_bytes()).decode()
    found: list[tuple[list[int], str, str, str]] = []
    for stanza in text.split("\n\n"):
        if not stanza.startswith("Package: openssl\n"):
            continue
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line)
        version = [int(x) for x in re.findall(r"\d+", fields["Version"].split("-")[0])]
        for line in stanza.splitlines():
            parts = line.split()
            if len(parts) == 3 and len(parts[0]) == 64 and parts[2].endswith(".orig.tar.gz"):
                found.append((version, parts[0], parts[2], fields["Directory"]))
    tarball: Path | None = None
    # Newest first; the index can name a version the mirror does not hold yet.
    for _, sha256, name, directory in sorted(found, reverse=True):
        candidate = peers / name
        try:
            if not candidate.exists():
                urllib.request.urlretrieve(f"{MIRROR}/{directory}/{name}", candidate)  # noqa: S310
        except OSError as e:
            log(f"{name}: {e}; trying an older one")
            continue
        if hashlib.sha256(candidate.read_bytes()).hexdigest() != sha256:
            candidate.unlink()
            raise RuntimeError(f"{name} does not match trixie's checksum")
        tarball = candidate
        break
    if tarball is None:
        raise RuntimeError("no source of openssl in trixie could be fetched")
    name = tarball.name
    build = peers / "openssl-build"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir()
    run(["tar", "-xzf", str(tarball), "-C", str(build), "--strip-components=1"])
    log(f"building {name.split('.orig')[0]} for borg 2 (once; a few minutes)")
    config = [f"--prefix={prefix}", "--libdir=lib", "no-shared", "no-tests", "no-docs"]
    run(["./Configure", *config], cwd=build)
    run(["make", f"-j{os.cpu_count() or 2}", "build_libs"], cwd=build, timeout=3600)
    run(["make", "install_dev"], cwd=build)
    shutil.rmtree(build, ignore_errors=True)
    return prefix


def borg_pip(peers: Path, spec: str, label: str) -> list[Tool]:
    venv = peers / f"borg-{label}"
    if not (venv / "bin" / "borg").exists():
        _borg_headers()
        # BORG_OPENSSL_PREFIX: borg 2 builds against OpenSSL 3.5 built here (see above);
        # borg 1.4 against the system's.
        prefix = _openssl_from_trixie(peers) if label.startswith("2") else Path("/usr")
        run([sys.executable, "-m", "venv", str(venv)])
        env = os.environ | {"BORG_OPENSSL_PREFIX": str(prefix)}
        pip = [str(venv / "bin" / "pip"), "install", "-q", "--pre", spec]
        try:
            run(pip, timeout=1800, env=env)
        except subprocess.CalledProcessError:
            shutil.rmtree(venv, ignore_errors=True)
            raise
    binary = str(venv / "bin" / "borg")
    version = run([binary, "--version"]).stdout.split()[-1]
    return [_borg(binary, version, c, v2=version.startswith("2.")) for c in BORG_SETTINGS]


def borg_bookworm(peers: Path) -> list[Tool]:
    folder = peers / "borg-1.2"
    root = folder / "root"
    if not root.exists():
        folder.mkdir(parents=True, exist_ok=True)
        for pkg in ("borgbackup", "python3-msgpack", "python3-packaging"):
            run(["apt-get", "download", pkg], cwd=folder)
        for deb in folder.glob("*.deb"):
            run(["dpkg-deb", "-x", str(deb), str(root)])
    site = root / "usr" / "lib" / "python3" / "dist-packages"
    wrapper = folder / "borg"
    wrapper.write_text(
        f'#!/bin/sh\nPYTHONPATH="{site}" exec /usr/bin/python3 -m borg.archiver "$@"\n'
    )
    wrapper.chmod(0o755)
    version = run([str(wrapper), "--version"]).stdout.split()[-1]
    return [_borg(str(wrapper), version, c, v2=False) for c in BORG_SETTINGS]


def _borg(binary: str, version: str, compression: str, *, v2: bool) -> Tool:
    env = {"BORG_PASSPHRASE": PASS, "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes"}
    counter = {"n": 0}

    def cmd(*args: str, cwd: Path | None = None) -> None:
        run([binary, *args], env=os.environ | env, cwd=cwd)

    def init(repo: Path) -> None:
        if v2:
            # The mode was renamed during the beta (repokey-aes-ocb, later aes256-ocb).
            try:
                cmd("-r", str(repo), "repo-create", "-e", "aes256-ocb")
            except subprocess.CalledProcessError:
                cmd("-r", str(repo), "repo-create", "-e", "repokey-aes-ocb")
        else:
            cmd("init", "-e", "repokey-blake2", str(repo))

    def store(repo: Path, data: Path) -> None:
        counter["n"] += 1
        name = f"s{counter['n']}"
        if v2:
            cmd("-r", str(repo), "create", "-C", compression, name, ".", cwd=data)
        else:
            cmd("create", "-C", compression, f"{repo}::{name}", ".", cwd=data)

    def extract(repo: Path, target: Path, *flags: str) -> None:
        name = f"s{counter['n']}"
        target.mkdir(parents=True, exist_ok=True)
        if v2:
            cmd("-r", str(repo), "extract", *flags, name, cwd=target)
        else:
            cmd("extract", *flags, f"{repo}::{name}", cwd=target)

    return Tool(
        f"borg-{version}-{compression}",
        version,
        f"-C {compression}; extract also --sparse",
        init,
        store,
        extract,
        restore_sparse=lambda repo, target: extract(repo, target, "--sparse"),
    )


# --- measuring -----------------------------------------------------------------------------


def measure(tool: Tool, data: Path, changed: Path, work: Path, expect: dict[str, str]) -> dict:
    repo = work / "repos" / tool.name
    target = work / "restore" / tool.name
    shutil.rmtree(repo, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    settle()
    tool.init(repo)
    size = sum(p.stat().st_size for p in data.iterdir() if p.is_file())
    changed_size = sum(p.stat().st_size for p in changed.iterdir() if p.is_file())
    out: dict[str, Any] = {"version": tool.version, "settings": tool.settings}
    for step, source in (("first", data), ("second", changed)):
        warm(source)
        settle()
        started = time.perf_counter()
        tool.store(repo, source)
        seconds = time.perf_counter() - started
        nbytes = size if step == "first" else changed_size
        out[f"{step}_store_mb_s"] = round(nbytes / seconds / MB, 1)
        out[f"{step}_store_s"] = round(seconds, 2)
        if step == "first":
            out["size_after_first_mb"] = round(du(repo) / MB, 1)
    out["stored_mb"] = round(du(repo) / MB, 1)
    restores = [("restore", tool.restore)]
    if tool.restore_sparse is not None:
        restores.append(("restore_sparse", tool.restore_sparse))
    for label, restore in restores:
        target.mkdir(parents=True)
        # Each tool reads its repository from the page cache: the peers' packs are cached
        # from their writes, ours were written around the cache, so all are read once here.
        warm(repo)
        settle()  # nothing of an earlier step is left to write back during this one
        started = time.perf_counter()
        try:
            restore(repo, target)
        except subprocess.CalledProcessError as e:
            if label == "restore":
                raise
            log(f"{tool.name} {label} failed, left out: {str(e.stderr).strip()[-300:]}")
            shutil.rmtree(target, ignore_errors=True)
            continue
        seconds = time.perf_counter() - started
        out[f"{label}_mb_s"] = round(changed_size / seconds / MB, 1)
        # Until it is on disk a restore can still be lost. Ours fsyncs every file; the
        # peers leave their writes in the page cache, so the same clock runs on through a
        # sync.
        os.sync()
        durable = time.perf_counter() - started
        out[f"{label}_durable_mb_s"] = round(changed_size / durable / MB, 1)
        got = digest_tree(target)
        out[f"{label}_exact"] = got == expect
        if got != expect:
            log(f"{tool.name} {label}: RESTORE DIFFERS ({len(got)} files vs {len(expect)})")
        shutil.rmtree(target, ignore_errors=True)
        settle()
    return out


def settle() -> None:
    """Let the file system finish an earlier step's work before the next timing. On this
    machine's ext4 (mounted with `discard`) a restore timed right after a store or a
    delete took 3.1-5.6 s and the same restore 1.9-2.3 s after two quiet seconds: the
    journal was still trimming and committing, and a tool that fsyncs (ours) waits behind
    that where one that leaves its writes in the page cache (the peers) does not."""
    os.sync()
    time.sleep(2)
    os.sync()


def primitives() -> dict[str, float]:
    """Single-core throughput of the building blocks, MB/s: the physical limit."""
    import hmac

    import blake3
    import zstandard
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from dockyard.agent.vault.chunker import Chunker, ChunkerParams
    from dockyard.agent.vault.crypto import Keys, new_master

    data = random.Random(1).randbytes(64 * 1024 * 1024)
    half = bytes(32 * 1024 * 1024) + data[: 32 * 1024 * 1024]
    keys = Keys(new_master())

    def rate(fn: Callable[[], object], n: int = len(data)) -> float:
        started = time.perf_counter()
        fn()
        return round(n / (time.perf_counter() - started) / MB, 1)

    # Hashing, compression and sealing work on one chunk at a time (the chunker's target
    # size), as the vault does: one call on all 64 MiB measured the page faults
    # of a fresh 64 MiB result more than the cipher (AES-GCM read 1.0-1.2 GB/s that way,
    # 4.8 chunk by chunk).
    step = ChunkerParams().avg_size

    def over(fn: Callable[[bytes], object], pieces: list[bytes]) -> Callable[[], None]:
        """`fn` on every piece, its results dropped as the vault's are (kept, they made the
        kernel fault in fresh pages for each, and that was what got measured)."""

        def run() -> None:
            for piece in pieces:
                fn(piece)

        return run

    def cut(source: bytes) -> list[bytes]:
        return [source[i : i + step] for i in range(0, len(source), step)]

    chunker = Chunker(keys.gear, ChunkerParams())
    aead = AESGCM(os.urandom(32))
    cctx = zstandard.ZstdCompressor(level=3)
    dctx = zstandard.ZstdDecompressor()
    nonce = b"\0" * 12
    packed = [cctx.compress(piece) for piece in cut(half)]
    sealed = [aead.encrypt(nonce, piece, None) for piece in cut(data)]
    return {
        "chunker": rate(lambda: sum(1 for _ in chunker.chunks(io.BytesIO(data)))),
        "hmac_sha256": rate(over(lambda c: hmac.digest(b"k" * 32, c, "sha256"), cut(data))),
        "blake3_keyed": rate(over(lambda c: blake3.blake3(c, key=b"k" * 32).digest(), cut(data))),
        "zstd3_half_zero": rate(over(cctx.compress, cut(half))),
        "zstd_decompress_half_zero": rate(
            over(lambda c: dctx.decompress(c, max_output_size=step), packed)
        ),
        "aes256gcm": rate(over(lambda c: aead.encrypt(nonce, c, None), cut(data))),
        "aes256gcm_open": rate(over(lambda c: aead.decrypt(nonce, c, None), sealed)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-gb", type=float, default=2.0)
    ap.add_argument("--data", type=Path, help="compare on this directory of files instead")
    ap.add_argument("--work", type=Path, default=ROOT / "build" / "bench-vault")
    ap.add_argument("--only", nargs="*", help="tool names to run (default: all)")
    ap.add_argument(
        "--dataset",
        choices=["synthetic", "real", "both"],
        default="both",
        help="synthetic (VM-shaped, made from a seed), real (this machine's files), or both",
    )
    args = ap.parse_args()
    work: Path = args.work
    peers = work / "peers"
    peers.mkdir(parents=True, exist_ok=True)

    datasets: list[tuple[str, Path]] = []
    if args.data is not None:
        datasets.append(("given", args.data))
    else:
        if args.dataset in ("synthetic", "both"):
            log(f"making a {args.size_gb} GB synthetic data set in {work / 'data'}")
            make_dataset(work / "data", int(args.size_gb * 1e9))
            datasets.append(("synthetic", work / "data"))
        if args.dataset in ("real", "both"):
            log(f"making the real data set in {work / 'real'}")
            make_real_dataset(work / "real", work)
            datasets.append(("real", work / "real"))

    tools: list[Tool] = [ours()]
    installers: list[tuple[str, Callable[[], list[Tool]]]] = [
        ("restic 0.18 (trixie)", lambda: [restic(peers, "trixie")]),
        ("restic 0.14 (bookworm)", lambda: [restic(peers, "bookworm")]),
        ("borg 1.4 (PyPI)", lambda: borg_pip(peers, "borgbackup>=1.4,<1.5", "1.4")),
        ("borg 2.0 beta (PyPI)", lambda: borg_pip(peers, "borgbackup>=2.0.0b1", "2")),
        ("borg 1.2 (bookworm)", lambda: borg_bookworm(peers)),
    ]
    for label, install in installers:
        if args.only and not any(label.replace(" ", "-").startswith(o) for o in args.only):
            continue  # not asked for: not installed either
        try:
            ready = install()
            tools.extend(ready)
            log(f"peer ready: {', '.join(t.name for t in ready)}")
        except (subprocess.CalledProcessError, OSError, RuntimeError, StopIteration) as e:
            detail = getattr(e, "stderr", "") or str(e)
            log(f"peer left out: {label}: {str(detail).strip()[-300:]}")
    if args.only:
        tools = [t for t in tools if any(t.name.startswith(o) for o in args.only)]

    prims = primitives()
    every: dict[str, Any] = {}
    for label, data in datasets:
        changed = insert_in_middle(data, work)
        expect = digest_tree(changed)
        results: dict[str, dict[str, Any]] = {}
        for tool in tools:
            log(f"measuring {tool.name} ({tool.settings}) on the {label} data set")
            try:
                results[tool.name] = measure(tool, data, changed, work, expect)
            except subprocess.CalledProcessError as e:
                log(f"{tool.name} failed: {e.stderr[-500:]}")
        print(f"=== {label} data set")
        every[label] = report(results, prims, data)
    print(json.dumps(every))


def report(results: dict[str, dict[str, Any]], prims: dict[str, float], data: Path) -> dict:
    width = max(len(n) for n in results) if results else 10
    cols = [
        "first_store_mb_s",
        "second_store_mb_s",
        "restore_mb_s",
        "restore_durable_mb_s",
        "restore_sparse_mb_s",
        "restore_sparse_durable_mb_s",
        "stored_mb",
        "restore_exact",
    ]
    print(f"data: {data}  ({du(data) / MB:.0f} MB)")
    print(f"{'tool':<{width}}  " + "  ".join(f"{c:>18}" for c in cols) + "  settings")
    for name, row in results.items():
        cells = "  ".join(f"{row.get(c)!s:>18}" for c in cols)
        print(f"{name:<{width}}  {cells}  {row['settings']}")
    ours_row = results.get("dockyard", {})

    def best(prefix: str, col: str, high: bool = True) -> float | None:
        """The peers' best; for a restore, the better of each peer's plain and sparse."""
        cols = [col, col.replace("restore_", "restore_sparse_")] if "restore" in col else [col]
        vals = [r[c] for n, r in results.items() if n.startswith(prefix) for c in cols if c in r]
        if not vals:
            return None
        return max(vals) if high else min(vals)

    figures: dict[str, Any] = {"tools": results, "primitives_mb_s": prims}
    for peer in ("restic", "borg"):
        for col, key, high in (
            ("first_store_mb_s", "store", True),
            ("second_store_mb_s", "second_store", True),
            ("restore_mb_s", "restore", True),
            ("restore_durable_mb_s", "restore_durable", True),
            ("stored_mb", "size", False),
        ):
            anchor = best(peer, col, high)
            mine = ours_row.get(col)
            if anchor and mine:
                figures[f"{key}_vs_{peer}"] = round(mine / anchor, 3)
    print("primitives, one core (MB/s):", prims)
    for key in sorted(k for k in figures if "_vs_" in k):
        print(f"{key:<28} {figures[key]}")
    return figures


if __name__ == "__main__":
    main()
