"""Archive and restore of one vSphere VM through the vault, beside the raw transfer of its disk.

On vcsim (our launcher of govmomi's simulator): a VM whose disk is a 1 GiB ext4 image made
with `mke2fs -d` from this machine's own files (/usr/lib, /usr/share: real binaries, text
and zeros past them, as a VM's disk is; not random, not only zeros) is archived into a vault
repository in a local directory, then restored. Beside it, in the same run, the floor: the
raw datastore download of the same file (what an archive must at least read) and its raw
upload (what a restore must at least write), through the same HTTP client. Prints archive
and restore MB/s, each as a share of the raw transfer, the bytes stored, and the process's
peak RSS; the last line is one JSON object. Goal: at least 0.8 of raw each way.
Never part of `make test`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dockyard.agent.modules.vm.archive import Archiver  # noqa: E402
from dockyard.agent.modules.vm.datastore import DatastorePath  # noqa: E402
from dockyard.agent.modules.vm.drivers import open_driver  # noqa: E402
from dockyard.agent.modules.vm.drivers.vsphere import VsphereDriver  # noqa: E402
from dockyard.agent.modules.vm.store import VmStore  # noqa: E402
from dockyard.agent.modules.vm.vmfiles.vsphere import VsphereFiles  # noqa: E402
from dockyard.agent.protocol.vm import ArchiveRules, PowerAction  # noqa: E402
from dockyard.agent.vault.backends import LocalBackend  # noqa: E402
from dockyard.agent.vault.repository import Repository  # noqa: E402
from tests.peers.vsphere_sim import Vcsim  # noqa: E402

PASSPHRASE = "bench passphrase, not a secret"  # noqa: S105 - a throwaway repository
SOURCES = ("/usr/lib", "/usr/share", "/usr/bin")
FAKE_TIME = "1700000000"


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def make_image(path: Path, mib: int, work: Path) -> None:
    """An ext4 image of real files filling about two thirds of it, deterministic here."""
    if path.exists() and path.stat().st_size == mib << 20:
        return
    if not shutil.which("mke2fs"):
        subprocess.run(["apt-get", "install", "-y", "-q", "e2fsprogs"], check=True)
    stage = work / "stage"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    room = mib * (1 << 20) * 2 // 3
    for tree in SOURCES:
        for sub in sorted(Path(tree).iterdir()) if Path(tree).is_dir() else ():
            if room <= 0:
                break
            if sub.is_symlink():
                continue
            size = int(subprocess.run(["du", "-sb", str(sub)], capture_output=True, text=True,
                                      check=True).stdout.split()[0])  # fmt: skip
            if size > room:
                continue
            dest = stage / tree.strip("/").replace("/", "_") / sub.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-a", str(sub), str(dest)], check=True)
            room -= size
    subprocess.run(
        ["mke2fs", "-q", "-t", "ext4", "-b", "4096", "-E", "nodiscard", "-d", str(stage),
         str(path), f"{mib}M"],
        check=True, env=os.environ | {"E2FSPROGS_FAKE_TIME": FAKE_TIME},
    )  # fmt: skip
    shutil.rmtree(stage, ignore_errors=True)


class _Sink(io.RawIOBase):
    def __init__(self) -> None:
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        n = len(memoryview(data))
        self.size += n
        return n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="the disk image's size")
    parser.add_argument("--work", type=Path, help="where the image and repository go")
    parser.add_argument("--rounds", type=int, default=1, help="archive/restore cycles")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="dockyard-vm-cycle-"))
    work.mkdir(parents=True, exist_ok=True)
    image = work / "disk.img"
    log(f"building a {args.mib} MiB image of real files in {image}")
    make_image(image, args.mib, work)
    size = image.stat().st_size

    sim = Vcsim(host=1, vm=1, ds=1).start()
    figures: dict[str, Any] = {}
    try:
        driver = open_driver("vc", {"kind": "vsphere", **sim.config()})
        assert isinstance(driver, VsphereDriver)
        vm = driver.discover().vms[0]
        driver.power(vm, PowerAction.POWER_OFF)
        files = VsphereFiles(driver)
        own, _ = files.files(vm)
        disk = next(f for f in own if f.source.endswith("-flat.vmdk"))
        where = DatastorePath.parse(disk.source)
        archive_s, restore_s, up_s, down_s, stored = [], [], [], [], 0
        for n in range(args.rounds):
            with image.open("rb") as source:
                t = time.perf_counter()
                files.ds.write(where, "DC0", source, size)  # type: ignore[arg-type]
                up_s.append(time.perf_counter() - t)
            sink = _Sink()
            t = time.perf_counter()
            with files.reader(disk) as stream:
                shutil.copyfileobj(stream, sink, 1 << 20)  # type: ignore[misc]
            down_s.append(time.perf_counter() - t)
            assert sink.size == size

            repo_dir = work / f"repo-{n}"
            shutil.rmtree(repo_dir, ignore_errors=True)
            repo = Repository.init(LocalBackend(repo_dir), PASSPHRASE)
            repo.add_recovery_key()
            state = work / f"state-{n}"
            shutil.rmtree(state, ignore_errors=True)
            state.mkdir()
            archiver = Archiver(VmStore(state / "vm.sqlite"), state, lambda: datetime.now(UTC))

            def open_repo(path: Path = repo_dir) -> Repository:
                return Repository.open(LocalBackend(path), passphrase=PASSPHRASE)

            t = time.perf_counter()
            record = archiver.archive("vc", vm, files, ArchiveRules(), open_repo)
            archive_s.append(time.perf_counter() - t)
            stored = record.stored_bytes
            t = time.perf_counter()
            archiver.restore("vc", vm, files, open_repo)
            restore_s.append(time.perf_counter() - t)
            with files.reader(disk) as stream, image.open("rb") as original:
                while True:
                    a, b = stream.read(1 << 20), original.read(1 << 20)
                    if a != b:
                        raise SystemExit("the restored disk differs from the original")
                    if not a:
                        break
            log(
                f"round {n + 1}: upload {up_s[-1]:.2f} s, download {down_s[-1]:.2f} s, "
                f"archive {archive_s[-1]:.2f} s, restore {restore_s[-1]:.2f} s"
            )
        files.close()
        driver.close()
        total = record.size_before
        best = min
        figures = {
            "disk_bytes": size,
            "vm_bytes": total,
            "stored_bytes": stored,
            "raw_download_mb_s": round(size / best(down_s) / 1e6, 1),
            "raw_upload_mb_s": round(size / best(up_s) / 1e6, 1),
            "archive_mb_s": round(total / best(archive_s) / 1e6, 1),
            "restore_mb_s": round(total / best(restore_s) / 1e6, 1),
        }
        figures["archive_share_of_raw"] = round(
            figures["archive_mb_s"] / figures["raw_download_mb_s"], 2
        )
        figures["restore_share_of_raw"] = round(
            figures["restore_mb_s"] / figures["raw_upload_mb_s"], 2
        )
        figures["peak_rss_mib"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        )
    finally:
        sim.stop()
    print(
        f"disk {size >> 20} MiB of real files, stored {stored / 1e6:.0f} MB\n"
        f"raw download {figures['raw_download_mb_s']} MB/s, archive {figures['archive_mb_s']}"
        f" MB/s: {figures['archive_share_of_raw']} of raw (goal 0.8)\n"
        f"raw upload {figures['raw_upload_mb_s']} MB/s, restore {figures['restore_mb_s']}"
        f" MB/s: {figures['restore_share_of_raw']} of raw (goal 0.8)\n"
        f"peak RSS {figures['peak_rss_mib']} MiB"
    )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
