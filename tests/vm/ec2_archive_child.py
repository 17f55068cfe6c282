"""The EC2 archive engine in a process of its own, for the kill -9 cases of test_ec2_archive.

`python -m tests.vm.ec2_archive_child archive|restore CONFIG_JSON INSTANCE REPO STATE_DIR` runs
one archive or restore of an instance on moto's server (which outlives this process, as AWS
outlives an agent); `DOCKYARD_CRASH_AT` makes it die at that point.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from dockyard.agent.modules.vm.archive import ArchiveFailed, Archiver
from dockyard.agent.modules.vm.drivers import open_driver
from dockyard.agent.modules.vm.drivers.base import VmInfo
from dockyard.agent.modules.vm.drivers.ec2 import Ec2Driver
from dockyard.agent.modules.vm.ec2archive import Ec2Archiver, Waits
from dockyard.agent.modules.vm.ec2files import Ec2Files
from dockyard.agent.modules.vm.store import VmStore
from dockyard.agent.protocol.vm import ArchiveRules, Identifiers
from dockyard.agent.vault.backends import LocalBackend
from dockyard.agent.vault.repository import Repository

from ..vault.conftest import PASS


def main(argv: list[str]) -> int:
    mode, config, vm_id, repo, state = argv
    driver = open_driver("aws", json.loads(config))
    assert isinstance(driver, Ec2Driver)
    files = Ec2Files(driver)
    live = files.instance(vm_id)
    vm = files.info(live) if live else VmInfo(vm_id, vm_id, "off", None, (), 0, 0, Identifiers())
    store = VmStore(Path(state) / "vm.sqlite")
    engine = Ec2Archiver(
        Archiver(store, Path(state), lambda: datetime.now(UTC)), Waits(poll_s=0.05)
    )

    def open_repo() -> Repository:
        return Repository.open(LocalBackend(Path(repo)), passphrase=PASS)

    try:
        if mode == "archive":
            engine.archive("aws", vm, files, ArchiveRules(), open_repo)
        else:
            engine.restore("aws", vm, files, open_repo)
    except ArchiveFailed as e:
        print(f"{e.code}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
