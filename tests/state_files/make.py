"""Writes the SQL dumps in this folder from the agent's code as of an earlier commit.

    python tests/state_files/make.py COMMIT

The code of COMMIT (`git archive`) is imported as `dockyard.agent` in a child process, which
writes an `agent.db` and a VM module store through that release's own classes, with a few
rows of each kind; each file's dump (`iterdump`) lands here as `<file>-<commit>.sql`. The
dumps are committed: the upgrade test (`tests/integration/test_state_migrations.py`) builds
files from them and opens them with the current code.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

WRITE = r"""
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dockyard.agent
assert dockyard.agent.__file__.startswith(sys.argv[2]), dockyard.agent.__file__
from dockyard.agent.journal import Journal
from dockyard.agent.protocol import FlowMode
from dockyard.agent.protocol.vm import Identifiers, Signal
from dockyard.agent.state import LinkRecord, State
from dockyard.agent.modules.vm.drivers.base import Inventory, Sample, VmInfo
from dockyard.agent.modules.vm.store import Notice, VmStore

out = Path(sys.argv[1])
now = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
state = State(out / "state")
state.save_link(LinkRecord(
    name="default", url="https://cloud.example", agent_id="0b5c4d1e-0000-4000-8000-000000000001",
    tenant_id="0b5c4d1e-0000-4000-8000-000000000002", site_id="0b5c4d1e-0000-4000-8000-000000000003",
    token_url="https://cloud.example/agent/v1/token", key_file=str(out / "state" / "default.key"),
    max_flow=FlowMode.METADATA, flow_mode=FlowMode.CONFIG, ca_bundle=None, last_seq=7,
    docked_at=now.isoformat(), last_contact_at=now.isoformat(),
))
state.put_policy("default", "p-1", "vm-lifecycle", "lab", 3, {"idle_days": 14})
state.set_features("default", "vm", ["notices"])
journal = Journal(state)
journal.start("default", "c-1", 5, "j-1", "noop.echo", {"say": "hi"})
journal.finish("c-1", "done", "ok", "said hi")
state.close()

store = VmStore(out / "vm.sqlite")
vm = VmInfo(native_id="vm-42", name="build-01", power_state="on", host="esx-1",
            datastores=("ds1",), cpus=2, memory_mb=4096,
            identifiers=Identifiers(bios_uuid="4231-aa", macs=["00:50:56:aa:bb:cc"]))
store.record_inventory(Inventory(endpoint="lab", hosts=(), datastores=(), vms=(vm,)), now)
store.add_samples("lab", [Sample(native_id="vm-42", at=now, values={Signal.CPU: 1.5})])
store.add_notice(Notice(notice_id="n-1", decision_id="d-1", endpoint="lab", native_id="vm-42",
                        recipient="owner@example.org", sent_at=now, due_at=now + timedelta(days=3),
                        answer=None, answered_at=None, acted_at=None, error=None))
store.add_never_act("lab", "dns-01", "the lab's DNS", now)
store.use_nonce("nonce-1", now)
store.set_mark("last_report", now.isoformat())
store.close()
"""


def main(commit: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        archive = subprocess.run(
            ["git", "archive", commit, "agent"], cwd=ROOT, check=True, capture_output=True
        ).stdout
        tree.mkdir()
        (tree / "agent.tar").write_bytes(archive)
        with tarfile.open(tree / "agent.tar") as tar:
            tar.extractall(tree / "dockyard", filter="data")
        files = Path(tmp) / "files"
        env = os.environ | {"PYTHONPATH": str(tree)}
        # The C chunker is not built in the archive; the state and the VM store never need it.
        subprocess.run(
            [sys.executable, "-c", WRITE, str(files), str(tree)], env=env, check=True, cwd=tmp
        )
        for name, path in (("agent-db", files / "state" / "agent.db"), ("vm", files / "vm.sqlite")):
            db = sqlite3.connect(path)
            dump = "\n".join(db.iterdump()) + "\n"
            version = db.execute("PRAGMA user_version").fetchone()[0]
            db.close()
            header = f"-- {path.name} as written by the agent of commit {commit}"
            header += f" (user_version {version}); made by tests/state_files/make.py\n"
            (HERE / f"{name}-{commit}.sql").write_text(header + dump)


if __name__ == "__main__":
    main(sys.argv[1])
