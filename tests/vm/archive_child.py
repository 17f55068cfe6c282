"""The archive engine in a process of its own, for the kill -9 test (test_archive_crash.py).

`python -m tests.vm.archive_child archive|restore|restore-elsewhere CONFIG_JSON VM_ID REPO
STATE_DIR` runs one archive or restore of a vcsim VM (CONFIG_JSON: the endpoint's
configuration), or of a libvirt domain when CONFIG_JSON's `kind` is `libvirt`;
restore-elsewhere writes the disks to CONFIG_JSON's `place` (vcsim's second datastore by
default). `DOCKYARD_CRASH_AT` makes it die at that point.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from dockyard.agent.modules.vm.archive import ArchiveFailed, Archiver
from dockyard.agent.modules.vm.drivers import open_driver
from dockyard.agent.modules.vm.drivers.libvirt import LibvirtDriver
from dockyard.agent.modules.vm.drivers.vsphere import VsphereDriver
from dockyard.agent.modules.vm.store import VmStore
from dockyard.agent.modules.vm.vmfiles import VmFiles
from dockyard.agent.modules.vm.vmfiles.libvirt import LibvirtFiles
from dockyard.agent.modules.vm.vmfiles.vsphere import VsphereFiles
from dockyard.agent.protocol.vm import ArchiveRules
from dockyard.agent.vault.backends import LocalBackend
from dockyard.agent.vault.repository import Repository

from ..vault.conftest import PASS


def main(argv: list[str]) -> int:
    mode, raw, vm_id, repo, state = argv
    config = json.loads(raw)
    kind, place = config.pop("kind", "vsphere"), config.pop("place", "LocalDS_1")
    endpoint = "kvm" if kind == "libvirt" else "vc"
    driver = open_driver(endpoint, {"kind": kind, **config})
    files: VmFiles
    if isinstance(driver, LibvirtDriver):
        files = LibvirtFiles(driver)
    else:
        assert isinstance(driver, VsphereDriver)
        files = VsphereFiles(driver)
    vm = next(v for v in driver.discover().vms if v.native_id == vm_id)
    archiver = Archiver(VmStore(Path(state) / "vm.sqlite"), Path(state), lambda: datetime.now(UTC))

    def open_repo() -> Repository:
        return Repository.open(LocalBackend(Path(repo)), passphrase=PASS)

    try:
        if mode == "archive":
            archiver.archive(endpoint, vm, files, ArchiveRules(), open_repo)
        elif mode == "restore":
            archiver.restore(endpoint, vm, files, open_repo)
        else:  # restore-elsewhere: the disks to another datastore or storage pool
            archiver.restore(endpoint, vm, files, open_repo, place=place)
    except ArchiveFailed as e:
        print(f"{e.code}: {e}", file=sys.stderr)
        return 1
    finally:
        files.close()
        driver.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
