"""The agent's SQLite files upgrade step by step from what earlier releases wrote.

The files are built from dumps made by the earlier releases' own code
(`tests/state_files/make.py`): `4243b3b` is the last release without schema versions,
`d6692d2` the VM module before its safety net added four tables. Opened with the current
code, every row is still there and the file is at the current version; a file from a newer
agent is refused with one line and left as it was.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dockyard.agent import errors, migrations
from dockyard.agent.journal import Journal
from dockyard.agent.modules.vm import store as vm_store
from dockyard.agent.state import DB_NAME, SCHEMA, State

from ..procs import Agent
from .test_agent_cli_errors import one_line, snapshot

FILES = Path(__file__).resolve().parents[1] / "state_files"


def build(dump: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.executescript((FILES / dump).read_text())
    db.close()
    return path


def version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def test_agent_db_of_the_previous_release_upgrades_with_its_rows(tmp_path: Path) -> None:
    state_dir = tmp_path / "agent"
    build("agent-db-4243b3b.sql", state_dir / DB_NAME)
    assert version(state_dir / DB_NAME) == 0
    # Read-only (status) reads it at its own version, and changes nothing.
    before = snapshot(state_dir)
    out = Agent(state_dir).cli("status")
    assert "0b5c4d1e-0000-4000-8000-000000000001" in out.stdout
    assert snapshot(state_dir) == before

    state = State(state_dir)
    try:
        link = state.link("default")
        assert link is not None
        assert (link.url, link.last_seq, link.flow_mode.value) == (
            "https://cloud.example",
            7,
            "config",
        )
        assert [p["document"] for p in state.policies("default")] == [{"idle_days": 14}]
        assert state.features("default") == {"vm": ["notices"]}
        entry = Journal(state).get("c-1")
        assert entry is not None
        assert (entry.state, entry.result_code) == ("done", "ok")
    finally:
        state.close()
    assert version(state_dir / DB_NAME) == SCHEMA.version


@pytest.mark.parametrize("release", ["d6692d2", "4243b3b"])
def test_vm_store_of_earlier_releases_upgrades_step_by_step(tmp_path: Path, release: str) -> None:
    path = build(f"vm-{release}.sql", tmp_path / "vm.sqlite")
    assert version(path) == 0
    store = vm_store.VmStore(path)
    try:
        (vm,) = store.vms("lab")
        assert (vm.vm.name, vm.vm.power_state, vm.vm.cpus) == ("build-01", "on", 2)
        assert vm.vm.identifiers.bios_uuid == "4231-aa"
        notice = store.notice("n-1")
        assert notice is not None
        assert notice.recipient == "owner@example.org"
        assert store.never_act() == {("lab", "dns-01"): "the lab's DNS"}
        now = datetime(2026, 11, 21, tzinfo=UTC)
        assert not store.use_nonce("nonce-1", now), "a link used before stays used"
        assert store.mark("last_report") == "2026-11-20T09:00:00+00:00"
        # The tables step 2 brought are there and take rows.
        store.add_audit("vm.power", "lab/vm-42", "refused", now, why="never-act")
        assert [a["outcome"] for a in store.audits()] == ["refused"]
    finally:
        store.close()
    assert version(path) == vm_store.SCHEMA.version == 4


def test_a_step_that_fails_leaves_the_file_at_the_version_before_it(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    good = migrations.Schema(steps=("CREATE TABLE a (x INTEGER);",))
    assert migrations.upgrade(db, good, path) == 1
    bad = migrations.Schema(
        steps=(*good.steps, "CREATE TABLE b (x INTEGER);\nINSERT INTO nowhere VALUES (1);")
    )
    with pytest.raises(sqlite3.OperationalError, match="nowhere"):
        migrations.upgrade(db, bad, path)
    assert migrations.version_of(db) == 1
    assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["a"]
    assert migrations.upgrade(db, good, path) == 0, "nothing left to run"
    db.close()


def test_a_file_from_a_newer_agent_is_refused_in_one_line_and_left_alone(tmp_path: Path) -> None:
    state_dir = tmp_path / "agent"
    path = build("agent-db-4243b3b.sql", state_dir / DB_NAME)
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA.version + 1}")
    db.close()
    before = snapshot(state_dir)
    agent = Agent(state_dir)
    for command in (("status",), ("run",)):
        line = one_line(agent.cli(*command, check=False), errors.EXIT_STATE)
        assert "written by a newer dockyard-agent" in line, line
        assert f"schema version {SCHEMA.version + 1}" in line
    assert snapshot(state_dir) == before


def test_a_vm_store_from_a_newer_agent_is_refused(tmp_path: Path) -> None:
    path = build("vm-4243b3b.sql", tmp_path / "vm.sqlite")
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 9")
    db.close()
    with pytest.raises(errors.StateTooNew, match="schema version 9; this one knows up to 4"):
        vm_store.VmStore(path)
    assert version(path) == 9
