"""Store, restore, dedup, keys, tampering: the repository through its Python API."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from dockyard.agent.vault.backends import LocalBackend
from dockyard.agent.vault.chunker import Chunker
from dockyard.agent.vault.errors import (
    Corrupted,
    IncompleteRestore,
    NeedsSecondKeySlot,
    NewerFormat,
    NotARepository,
    RepositoryExists,
    WrongKey,
)
from dockyard.agent.vault.repository import Repository, Source

from ..procs import BIN
from .conftest import FAST, PASS, SMALL, vm_like


def source(name: str, data: bytes) -> Source:
    return Source(name, lambda: io.BytesIO(data), len(data), 0o640, 1_700_000_000.0)


def test_store_and_restore_bit_exact(repo: Repository, tmp_path: Path) -> None:
    a, b = vm_like(3_000_000, 10), vm_like(1_000_000, 11)
    snap, stats = repo.store([source("disk-a.img", a), source("sub/disk-b.img", b)], name="t")
    assert stats.files == 2
    assert stats.bytes_read == 4_000_000
    assert stats.new_bytes_stored < stats.bytes_read, "zero runs and text compress"
    out = tmp_path / "out"
    repo.restore(snap.id, out)
    assert (out / "disk-a.img").read_bytes() == a
    assert (out / "sub/disk-b.img").read_bytes() == b
    assert (out / "disk-a.img").stat().st_mode & 0o777 == 0o640
    stream = io.BytesIO()
    repo.restore_stream(snap.id[:8], "sub/disk-b.img", stream)
    assert stream.getvalue() == b


def test_zeros_come_back_as_holes_and_the_same_bytes(repo: Repository, tmp_path: Path) -> None:
    """A VM image's runs of zeros: restored as holes (known zero chunks are not even read),
    or written out in full when asked; the bytes read back are the same either way."""
    head = vm_like(600_000, 16)
    zeros = bytes(3 * SMALL.max_size + 12_345)
    image = head + zeros + head[:100_000] + bytes(2 * SMALL.max_size)  # ends in a hole
    snap, _ = repo.store([source("disk.img", image)])
    reads: list[int] = []
    get_range = repo.backend.get_range

    def counting(key: str, start: int, length: int) -> bytes:
        reads.append(length)
        return get_range(key, start, length)

    repo.backend.get_range = counting  # type: ignore[method-assign]
    repo.restore(snap.id, tmp_path / "sparse")
    sparse = tmp_path / "sparse" / "disk.img"
    assert sparse.read_bytes() == image
    assert sparse.stat().st_size == len(image)
    assert sum(reads) < len(image) - len(zeros), "the zero chunks were not read"
    repo.restore(snap.id, tmp_path / "full", sparse=False)
    full = tmp_path / "full" / "disk.img"
    assert full.read_bytes() == image
    if full.stat().st_blocks * 512 >= len(image):  # a file system that keeps holes
        # Each run loses at most a chunk at either edge to its neighbours: 1.5 chunks at least.
        assert sparse.stat().st_blocks * 512 < len(image) - 3 * SMALL.max_size // 2
    stream = io.BytesIO()
    repo.restore_stream(snap.id, "disk.img", stream)
    assert stream.getvalue() == image


def test_a_zero_chunk_is_hashed_once_per_length_and_restores(
    repo: Repository, tmp_path: Path
) -> None:
    """Zero runs cut at the maximum size are recognised before hashing: ten of them cost
    one keyed hash, and their id is the one hashing would give (it dedups with them)."""
    data = vm_like(300_000, 21)
    image = data + bytes(10 * SMALL.max_size) + data[:50_000]
    hashed: list[int] = []
    chunk_id = repo.keys.chunk_id

    def counting(chunk: bytes | memoryview) -> bytes:
        hashed.append(len(chunk))
        return chunk_id(chunk)

    repo.keys.chunk_id = counting  # type: ignore[method-assign]
    snap, stats = repo.store([source("disk.img", image)])
    zero = chunk_id(bytes(SMALL.max_size))
    ids = snap.files[0].chunks
    assert ids.count(zero) >= 9, "the zero run is cut at the maximum size"
    full = [c for c, n in zip(ids, snap.files[0].lengths, strict=True) if n == SMALL.max_size]
    others = [c for c in full if c != zero]
    assert hashed.count(SMALL.max_size) == len(others) + 1, "one hash for all zero chunks"
    assert stats.chunks == len(ids)
    repo.restore(snap.id, tmp_path / "out", sparse=False)
    assert (tmp_path / "out" / "disk.img").read_bytes() == image


def test_each_chunk_is_stored_once_across_files_and_snapshots(repo: Repository) -> None:
    """Exactly the chunks the repository lacks are stored, whatever its (random) key. How
    soon the chunking falls back in step after a shift depends on the key, so that is
    checked under fixed keys in test_chunker.py, not here."""
    data = vm_like(2_000_000, 12)
    _, first = repo.store([source("a", data), source("b", data)])
    assert first.new_chunks == first.chunks // 2
    shifted = b"\x01" * 1234 + data  # the same content at an unaligned offset
    chunker = Chunker(repo.keys.gear, repo.params)
    had = set(chunker.chunks(io.BytesIO(data)))
    lacking = set(chunker.chunks(io.BytesIO(shifted))) - had
    _, second = repo.store([source("c", shifted)])
    assert second.new_chunks == len(lacking), second
    assert second.new_chunks < second.chunks // 2, "most of the shifted file deduplicates"
    _, third = repo.store([source("d", shifted)])
    assert third.new_chunks == 0, third


def test_reopen_with_passphrase_and_recovery_key(repo: Repository, tmp_path: Path) -> None:
    data = vm_like(500_000, 13)
    snap, _ = repo.store([source("f", data)])
    with pytest.raises(NeedsSecondKeySlot):
        repo.require_second_slot()
    recovery = repo.add_recovery_key()
    repo.require_second_slot()

    backend = LocalBackend(tmp_path / "repo")
    again = Repository.open(backend, recovery_key=recovery)
    out = tmp_path / "r"
    again.restore(snap.id, out)
    assert (out / "f").read_bytes() == data
    assert Repository.open(backend, passphrase=PASS).id == repo.id
    with pytest.raises(WrongKey):
        Repository.open(backend, passphrase="not the passphrase")
    with pytest.raises(WrongKey):
        Repository.open(backend, recovery_key="AAAAAAA-" * 7 + "AAAA")


def test_a_tampered_byte_is_an_error_never_wrong_data(repo: Repository, tmp_path: Path) -> None:
    a, b = vm_like(800_000, 14), vm_like(800_000, 15)
    snap, _ = repo.store([source("a", a)])
    snap_b, _ = repo.store([source("b", b)])
    pack_of_a = repo.index[repo.snapshot(snap.id).files[0].chunks[0]].pack
    path = tmp_path / "repo" / "data" / pack_of_a[:2] / pack_of_a
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0x01
    path.write_bytes(bytes(raw))

    with pytest.raises(IncompleteRestore) as e:
        repo.restore(snap.id, tmp_path / "out")
    assert list(e.value.damaged) == ["a"]
    assert not (tmp_path / "out" / "a").exists(), "no partial file is left under the name"
    repo.restore(snap_b.id, tmp_path / "out")
    assert (tmp_path / "out" / "b").read_bytes() == b
    report = repo.verify()
    assert report["problems"]
    assert "damaged" in report["problems"][0]


def test_a_missing_pack_names_the_damaged_files(repo: Repository, tmp_path: Path) -> None:
    a, b = vm_like(600_000, 16), vm_like(600_000, 17)
    snap, _ = repo.store([source("a", a)])
    repo.store([source("b", b)])
    both, _ = repo.store([source("a", a), source("b", b)])
    gone = {repo.index[c].pack for c in repo.snapshot(snap.id).files[0].chunks}
    for pack in gone:
        (tmp_path / "repo" / "data" / pack[:2] / pack).unlink()
    with pytest.raises(IncompleteRestore) as e:
        repo.restore(both.id, tmp_path / "out")
    assert set(e.value.damaged) == {"a"}
    assert (tmp_path / "out" / "b").read_bytes() == b


def test_bad_repositories_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(NotARepository):
        Repository.open(LocalBackend(tmp_path / "nothing"), passphrase=PASS)
    backend = LocalBackend(tmp_path / "r")
    Repository.init(backend, PASS, cost=FAST)
    with pytest.raises(RepositoryExists):
        Repository.init(backend, PASS, cost=FAST)
    config = json.loads((tmp_path / "r" / "config").read_text())
    config["format"] = 99
    (tmp_path / "r" / "config").write_text(json.dumps(config))
    with pytest.raises(NewerFormat):
        Repository.open(backend, passphrase=PASS)
    config["format"] = 1
    config["pack_bytes"] = 1  # a changed setting no longer matches the config's MAC
    (tmp_path / "r" / "config").write_text(json.dumps(config))
    with pytest.raises(WrongKey):
        Repository.open(backend, passphrase=PASS)
    (tmp_path / "r" / "config").write_text("{not json")
    with pytest.raises(Corrupted):
        Repository.open(backend, passphrase=PASS)


def test_a_truncated_pack_is_named_not_misread(repo: Repository, tmp_path: Path) -> None:
    data = vm_like(900_000, 18)
    snap, _ = repo.store([source("a", data)])
    pack = repo.index[snap.files[0].chunks[-1]].pack
    path = tmp_path / "repo" / "data" / pack[:2] / pack
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(IncompleteRestore) as e:
        repo.restore(snap.id, tmp_path / "out")
    assert "shorter than its index says" in e.value.damaged["a"]
    assert any("pack" in problem for problem in repo.verify()["problems"])


def test_a_wiped_agent_is_replaced_and_restores_with_the_recovery_key(tmp_path: Path) -> None:
    """The first agent's host is gone (its passphrase file with it); a fresh agent with
    only the recovery key, written down at set-up, restores everything."""
    cli = [str(BIN / "dockyard-agent"), "vault", "--repo", str(tmp_path / "repo")]
    first = tmp_path / "first-agent"
    first.mkdir()
    (first / "pass").write_text(PASS)
    (first / "disk.img").write_bytes(vm_like(1_000_000, 19))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(first)}
    subprocess.run([*cli, "--passphrase-file", str(first / "pass"), "init"], env=env, check=True)
    made = subprocess.run(
        [*cli, "--passphrase-file", str(first / "pass"), "--json", "key", "add-recovery"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    recovery = json.loads(made.stdout)["recovery_key"]
    store = ["--no-progress", "store", str(first / "disk.img")]
    subprocess.run([*cli, "--passphrase-file", str(first / "pass"), *store], env=env, check=True)
    original = (first / "disk.img").read_bytes()
    shutil.rmtree(first)

    fresh = tmp_path / "fresh-agent"
    fresh.mkdir()
    (fresh / "recovery").write_text(recovery)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(fresh)}
    listed = subprocess.run(
        [*cli, "--recovery-key-file", str(fresh / "recovery"), "--json", "ls"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    snapshot = json.loads(listed.stdout)[0]["id"]
    restore = ["--no-progress", "restore", snapshot, "--target", str(fresh / "out")]
    key = ["--recovery-key-file", str(fresh / "recovery")]
    subprocess.run([*cli, *key, *restore], env=env, check=True)
    assert (fresh / "out" / "disk.img").read_bytes() == original


def test_cli_stores_a_directory_and_refuses_a_missing_path(tmp_path: Path) -> None:
    tree = tmp_path / "vm-folder"
    (tree / "disks").mkdir(parents=True)
    (tree / "vm.vmx").write_text("config")
    (tree / "disks" / "disk0.vmdk").write_bytes(vm_like(300_000, 20))
    (tmp_path / "pass").write_text(PASS)
    cli = [str(BIN / "dockyard-agent"), "vault", "--repo", str(tmp_path / "repo")]
    cli += ["--passphrase-file", str(tmp_path / "pass"), "--no-progress"]
    subprocess.run([*cli, "init"], check=True, capture_output=True)
    missing = subprocess.run(
        [*cli, "store", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert missing.returncode == 1
    assert "no such file or directory" in missing.stderr
    out = subprocess.run([*cli, "--json", "store", str(tree)], check=True, capture_output=True)
    snapshot = json.loads(out.stdout)["snapshot"]
    subprocess.run([*cli, "restore", snapshot, "--target", str(tmp_path / "back")], check=True)
    assert (tmp_path / "back" / "vm-folder" / "vm.vmx").read_text() == "config"
    restored = tmp_path / "back" / "vm-folder" / "disks" / "disk0.vmdk"
    assert restored.read_bytes() == (tree / "disks" / "disk0.vmdk").read_bytes()


def test_unchanged_files_are_not_read_again_and_any_write_is_noticed(
    repo: Repository, tmp_path: Path
) -> None:
    """The files cache: same size, mtime, ctime, inode and device as in this host's newest
    snapshot means the chunks are reused unread. ctime moves on every write, so content
    rewritten at the same size with its mtime set back is still read."""
    folder = tmp_path / "images"
    folder.mkdir()
    a, b = folder / "a.img", folder / "b.img"
    a.write_bytes(vm_like(2_000_000, 30))
    b.write_bytes(vm_like(1_000_000, 31))
    first, stats = repo.store([Source.from_path(a), Source.from_path(b)])
    assert stats.files_unchanged == 0

    second, stats = repo.store([Source.from_path(a), Source.from_path(b)])
    assert (stats.files, stats.files_unchanged, stats.bytes_read) == (2, 2, 0)
    assert second.files[0].chunks == first.files[0].chunks

    before = b.stat()
    changed = bytearray(b.read_bytes())
    changed[500_000:500_010] = b"0123456789"
    b.write_bytes(bytes(changed))
    import os

    os.utime(b, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime set back: ctime is not
    assert b.stat().st_mtime_ns == before.st_mtime_ns
    third, stats = repo.store([Source.from_path(a), Source.from_path(b)])
    assert (stats.files_unchanged, stats.bytes_read) == (1, 1_000_000)
    out = tmp_path / "out"
    repo.restore(third.id, out)
    assert (out / "b.img").read_bytes() == bytes(changed)
    assert (out / "a.img").read_bytes() == a.read_bytes()

    _, stats = repo.store([Source.from_path(a), Source.from_path(b)], rescan=True)
    assert (stats.files_unchanged, stats.bytes_read) == (0, 3_000_000)


def test_format_1_repositories_keep_hmac_ids_and_the_id_hash_is_under_the_mac(
    tmp_path: Path,
) -> None:
    import hmac

    import blake3

    old = Repository.init(LocalBackend(tmp_path / "v1"), PASS, cost=FAST, id_hash="hmac-sha256")
    assert old.config["format"] == 1
    assert "id_hash" not in old.config
    data = vm_like(600_000, 40)
    snap, _ = old.store([source("d.img", data)])
    again = Repository.open(LocalBackend(tmp_path / "v1"), passphrase=PASS)
    first = snap.files[0].chunks[0]
    assert again.keys.id_hash == "hmac-sha256"
    stream = io.BytesIO()
    again.restore_stream(snap.id, "d.img", stream)
    assert stream.getvalue() == data
    chunk = stream.getvalue()[: again.index[first].raw_length]
    assert hmac.digest(again.keys._id_key, chunk, "sha256") == first

    new = Repository.init(LocalBackend(tmp_path / "v2"), PASS, cost=FAST)
    assert (new.config["format"], new.config["id_hash"]) == (2, "blake3")
    assert new.keys.chunk_id(b"x") == blake3.blake3(b"x", key=new.keys._id_key).digest()
    config_file = tmp_path / "v2" / "config"
    config = json.loads(config_file.read_text())
    config["id_hash"] = "hmac-sha256"  # a downgrade by someone without the key
    config_file.write_text(json.dumps(config))
    with pytest.raises(WrongKey):
        Repository.open(LocalBackend(tmp_path / "v2"), passphrase=PASS)


@pytest.mark.parametrize("lanes", [1, 2])
def test_files_come_out_in_order_and_one_lane_reads_each_before_the_next(
    repo: Repository, tmp_path: Path, lanes: int
) -> None:
    """Two lanes read files at once, the large and the small overtaking each other; the
    snapshot still lists them in the sources' order, each restoring to its bytes. One lane
    asks for the next source only once the one before was read to its end (what the VM
    archive's manifest of hashes needs), and reads it on the calling thread."""
    import threading

    sizes = [2_000_000, 10, 700_000, 0, 1_500_000, 3, 40_000]
    blobs = [vm_like(n, 40 + i) if n > 1000 else bytes([i]) * n for i, n in enumerate(sizes)]
    finished: list[int] = []
    threads: set[str] = set()

    class Tracked(io.BytesIO):
        def __init__(self, i: int) -> None:
            super().__init__(blobs[i])
            self.i = i

        def readinto(self, b) -> int:  # type: ignore[no-untyped-def, override]
            threads.add(threading.current_thread().name)
            n = super().readinto(b)
            if n == 0 and self.i not in finished:
                finished.append(self.i)
            return n

    asked_after: list[list[int]] = []

    def sources():  # type: ignore[no-untyped-def]
        for i, blob in enumerate(blobs):
            asked_after.append(sorted(finished))
            yield Source(f"f{i}", lambda i=i: Tracked(i), len(blob), 0o640, 1_700_000_000.0)

    snap, stats = repo.store(sources(), lanes=lanes)
    assert [f.path for f in snap.files] == [f"f{i}" for i in range(len(blobs))]
    assert stats.bytes_read == sum(sizes)
    if lanes == 1:
        assert asked_after == [list(range(i)) for i in range(len(blobs))]
        assert threads == {threading.current_thread().name}
    else:
        assert any(name.startswith("vault-lane") for name in threads)
    repo.restore(snap.id, tmp_path / "out", sparse=False)
    for i, blob in enumerate(blobs):
        assert (tmp_path / "out" / f"f{i}").read_bytes() == blob
