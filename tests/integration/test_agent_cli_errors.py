"""The agent's command line when something is wrong, on real subprocesses of the installed
CLI: each case answers one line on standard error and its documented exit code (never a
traceback), changes nothing it should not, and a damaged agent.db has a way out (`repair`)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from dockyard.agent import errors
from dockyard.agent.state import State
from dockyard.cloud.store.db import Database

from ..factories import enrolment_secret, make_world
from ..procs import BIN as BIN_DIR
from ..procs import Agent, Cloud

WELL_FORMED_UNKNOWN = "dy_enr_" + "A" * 43


def one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The one line a failing command printed, after checking how it ended."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dockyard-agent: ")
    return lines[0]


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` with its bytes (nothing means the folder is absent)."""
    if not directory.exists():
        return {}
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


def docked(cloud: Cloud, pg: Database, tmp_path: Path) -> Agent:
    agent = Agent(tmp_path / "agent")
    agent.dock(cloud.url, enrolment_secret(make_world(pg)))
    return agent


# --- dock ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "says"),
    [
        ("dy_enr_short", "malformed (12 characters"),
        ("dy_enr_" + "x" * 200, "malformed (207 characters"),
        ("dy_enr_has spaces and ünïcode in it", "characters a token never has"),
    ],
)
def test_a_short_or_malformed_token_is_refused_before_anything_is_written(
    tmp_path: Path, token: str, says: str
) -> None:
    agent = Agent(tmp_path / "agent")
    result = agent.cli("dock", "http://127.0.0.1:9", input=token + "\n", check=False)
    line = one_line(result, errors.EXIT_BAD_INPUT)
    assert says in line
    assert token not in line, "the token itself is never echoed"
    assert not agent.state.exists()


def test_a_dock_refused_for_its_url_leaves_no_key_and_no_agent_db(tmp_path: Path) -> None:
    agent = Agent(tmp_path / "agent")
    result = agent.cli("dock", "http://dock.example.com", input=WELL_FORMED_UNKNOWN, check=False)
    assert "https" in one_line(result, errors.EXIT_BAD_INPUT)
    assert not agent.state.exists()


def test_a_dock_the_cloud_refuses_leaves_the_state_as_it_was(cloud: Cloud, tmp_path: Path) -> None:
    fresh = Agent(tmp_path / "fresh")
    result = fresh.cli("dock", cloud.url, input=WELL_FORMED_UNKNOWN, check=False)
    assert "the cloud refused" in one_line(result, errors.EXIT_FAILED)
    assert not fresh.state.exists(), "no key, no agent.db, no folder"

    standalone = Agent(tmp_path / "standalone")
    standalone.cli("repair")  # nothing to repair; creates nothing either
    assert not standalone.state.exists()
    State(standalone.state).close()  # an agent that ran standalone before
    before = snapshot(standalone.state)
    assert "agent.db" in before
    result = standalone.cli("dock", cloud.url, input=WELL_FORMED_UNKNOWN, check=False)
    one_line(result, errors.EXIT_FAILED)
    assert snapshot(standalone.state) == before


def test_an_unreachable_cloud_is_its_own_exit_code(tmp_path: Path) -> None:
    agent = Agent(tmp_path / "agent")
    result = agent.cli("dock", "http://127.0.0.1:9", input=WELL_FORMED_UNKNOWN, check=False)
    assert "cannot reach" in one_line(result, errors.EXIT_UNREACHABLE)
    assert not agent.state.exists()


# --- read-only commands -------------------------------------------------------------------


def test_status_without_state_creates_nothing(tmp_path: Path) -> None:
    where = tmp_path / "nowhere"
    env = {"DOCKYARD_AGENT_STATE": str(where)}
    out = subprocess.run(
        [str(BIN_DIR / "dockyard-agent"), "status"],
        capture_output=True,
        text=True,
        env=os.environ | env,
        check=True,
    )
    assert "standalone" in out.stdout
    assert not where.exists()


def test_status_without_state_leaves_the_default_directory_uncreated() -> None:
    default = Path("/var/lib/dockyard-agent")
    if default.exists():
        pytest.skip("this machine has an agent state in /var/lib/dockyard-agent")
    env = {k: v for k, v in os.environ.items() if k != "DOCKYARD_AGENT_STATE"}
    out = subprocess.run(
        [str(BIN_DIR / "dockyard-agent"), "status", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert json.loads(out.stdout)["docked"] is False
    assert not default.exists()


def test_status_of_a_docked_agent_writes_nothing(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    agent = docked(cloud, pg, tmp_path)
    before = snapshot(agent.state)
    names = sorted(os.listdir(agent.state))
    assert json.loads(agent.cli("status", "--json").stdout)["docked"] is True
    agent.cli("status")
    assert sorted(os.listdir(agent.state)) == names
    assert snapshot(agent.state) == before


def test_version() -> None:
    out = subprocess.run(
        [str(BIN_DIR / "dockyard-agent"), "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().startswith("dockyard-agent 0.")


# --- the key file -------------------------------------------------------------------------


def test_a_key_file_others_can_read_is_refused_with_the_fix(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    agent = docked(cloud, pg, tmp_path)
    key = next(agent.state.glob("*.key"))
    key.chmod(0o644)
    for command in ("run", "rotate-key"):
        line = one_line(agent.cli(command, check=False), errors.EXIT_STATE)
        assert "mode 644" in line
        assert f"chmod 600 {key}" in line
    status = agent.cli("status")  # says so, and does not fail
    assert "flow mode" in status.stdout
    warning = one_line(status, 0)
    assert warning.startswith("dockyard-agent: warning: ")
    assert "mode 644" in warning
    assert f"chmod 600 {key}" in warning
    (link,) = json.loads(agent.cli("status", "--json").stdout)["links"]
    assert link["key_file"] == str(key)
    assert "mode 644" in link["key_warning"]
    key.chmod(0o600)
    assert json.loads(agent.cli("status", "--json").stdout)["links"][0]["key_warning"] is None
    assert agent.cli("status").stderr == ""
    key.chmod(0o600)
    key.unlink()
    assert "missing" in one_line(agent.cli("rotate-key", check=False), errors.EXIT_STATE)


def test_a_state_dir_given_relative_at_dock_works_from_any_directory(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    """`dock --state ./agent`, then `rotate-key` run from elsewhere: the key's path was
    stored as typed, relative to where `dock` ran. It is stored absolute now, and a relative
    path an earlier agent stored is read as the file of that name in the state directory."""
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    state = here / "agent"

    def cli(cwd: Path, where: str, *args: str, token: str | None = None) -> str:
        result = subprocess.run(
            [str(BIN_DIR / "dockyard-agent"), "--state", where, *args],
            cwd=cwd,
            input=token,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    cli(here, "./agent", "dock", cloud.url, token=enrolment_secret(make_world(pg)) + "\n")
    key = state / "default.key"
    conn = sqlite3.connect(state / "agent.db")
    try:
        (stored,) = conn.execute("SELECT key_file FROM links").fetchone()
        assert stored == str(key.resolve())
        # What an earlier agent stored for the same `dock --state ./agent`:
        conn.execute("UPDATE links SET key_file = './agent/default.key'")
        conn.commit()
    finally:
        conn.close()
    old_pem = key.read_bytes()
    assert "rotated" in cli(elsewhere, str(state), "rotate-key")
    assert key.read_bytes() != old_pem
    assert not (elsewhere / "agent").exists()


# --- a damaged agent.db -------------------------------------------------------------------


def test_garbage_in_agent_db_is_detected_by_every_command_and_repair_sets_it_aside(
    tmp_path: Path,
) -> None:
    agent = Agent(tmp_path / "agent")
    agent.state.mkdir()
    garbage = os.urandom(8192)
    db = agent.state / "agent.db"
    db.write_bytes(garbage)
    for args in (("status",), ("run",), ("undock",), ("rotate-key",), ("vm", "ls")):
        line = one_line(agent.cli(*args, check=False), errors.EXIT_STATE)
        assert "is damaged" in line
        assert "dockyard-agent repair" in line
        assert db.read_bytes() == garbage, f"{args} changed the damaged file"
    result = agent.cli("dock", "http://127.0.0.1:9", input=WELL_FORMED_UNKNOWN, check=False)
    assert "is damaged" in one_line(result, errors.EXIT_STATE)

    out = agent.cli("repair").stdout
    assert "set the damaged agent.db aside" in out
    assert "dock again" in out
    (aside,) = agent.state.glob("agent.db.damaged-*")
    assert aside.read_bytes() == garbage, "kept aside as it was"
    assert json.loads(agent.cli("status", "--json").stdout)["docked"] is False
    assert "sound" in agent.cli("repair").stdout


def test_repair_keeps_the_link_from_a_partly_damaged_agent_db(
    cloud: Cloud, pg: Database, tmp_path: Path
) -> None:
    agent = docked(cloud, pg, tmp_path)
    agent_id = json.loads(agent.cli("status", "--json").stdout)["links"][0]["agent_id"]
    db = agent.state / "agent.db"
    conn = sqlite3.connect(db)
    try:
        conn.executemany(
            "INSERT INTO journal VALUES ('default', ?, ?, 'job', 'noop.echo', ?, 'done', 'ok',"
            " NULL, '2026-01-01', '2026-01-01', 1)",
            [(f"cmd-{i}", i, "x" * 300) for i in range(300)],
        )
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        leaves = [
            r[0]
            for r in conn.execute(
                "SELECT pageno FROM dbstat WHERE name = 'journal' AND pagetype = 'leaf'"
                " ORDER BY pageno"
            )
        ]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    assert len(leaves) > 4
    with open(db, "r+b") as f:  # scribble over one leaf page in the middle of the journal
        f.seek((leaves[len(leaves) // 2] - 1) * page_size)
        f.write(b"\xa5" * page_size)

    line = one_line(agent.cli("status", check=False), errors.EXIT_STATE)
    assert "is damaged" in line

    out = agent.cli("repair").stdout
    assert "kept 1 links rows" in out
    assert f"docked as agent {agent_id} again" in out
    assert "could not read all of: journal" in out
    status = json.loads(agent.cli("status", "--json").stdout)
    assert status["links"][0]["agent_id"] == agent_id
    conn = sqlite3.connect(db)
    try:
        kept = conn.execute("SELECT count(*) FROM journal").fetchone()[0]
    finally:
        conn.close()
    assert 0 < kept < 300


_KILLED_WRITER = """
import os, sqlite3, sys
db, mode = sys.argv[1], sys.argv[2]
c = sqlite3.connect(db, isolation_level=None)
c.execute(f"PRAGMA journal_mode={mode}")
c.execute("PRAGMA wal_autocheckpoint=0")
c.execute("PRAGMA cache_size=1")  # DELETE: the journal is written before the commit
c.execute("BEGIN")
for i in range(200):
    c.execute("INSERT INTO policies VALUES ('default', ?, 'k', 'n', 1, ?)", (str(i), "x" * 400))
if mode == "WAL":
    c.execute("COMMIT")  # committed in the WAL, never checkpointed
os._exit(0)  # killed: SQLite cleans nothing up
"""


@pytest.mark.parametrize(
    ("mode", "companions"), [("WAL", ["-wal", "-shm"]), ("DELETE", ["-journal"])]
)
def test_repair_sets_the_damaged_files_companions_aside_with_it(
    tmp_path: Path, mode: str, companions: list[str]
) -> None:
    """A writer killed mid-work leaves a -wal and -shm (or a hot -journal) beside agent.db:
    they belong to the damaged file, so they move with it, byte for byte, and nothing of
    theirs stays beside the new agent.db (an old -journal would be taken for its own)."""
    agent = Agent(tmp_path / "agent")
    State(agent.state).close()
    db = agent.state / "agent.db"
    subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(db), mode], check=True)
    assert sorted(p.name for p in agent.state.iterdir()) == sorted(
        ["agent.db", *(f"agent.db{c}" for c in companions)]
    )
    db.write_bytes(os.urandom(db.stat().st_size))
    before = snapshot(agent.state)
    assert "is damaged" in one_line(agent.cli("status", check=False), errors.EXIT_STATE)

    agent.cli("repair")
    (aside,) = agent.state.glob("agent.db.damaged-*[0-9]Z")
    kept = {"agent.db", aside.name, *(aside.name + c for c in companions)}
    assert {p.name for p in agent.state.iterdir()} == kept
    after = snapshot(agent.state)
    for suffix in ("", *(c for c in companions if c != "-shm")):
        assert after[aside.name + suffix] == before["agent.db" + suffix], suffix
    assert "sound" in agent.cli("repair").stdout


def test_repair_adds_no_files_of_its_own_beside_what_it_set_aside(tmp_path: Path) -> None:
    """Reading the damaged copy leaves no -wal and -shm beside it, and a second repair within
    the same second keeps the first one's copy."""
    agent = Agent(tmp_path / "agent")
    State(agent.state).close()
    db = agent.state / "agent.db"
    original = db.read_bytes()
    conn = sqlite3.connect(db)
    try:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    for _ in range(2):  # a WAL database whose second page (its first table) is scribbled on
        db.write_bytes(original[:page_size] + b"\xa5" * (len(original) - page_size))
        assert "is damaged" in one_line(agent.cli("status", check=False), errors.EXIT_STATE)
        agent.cli("repair")
    names = sorted(p.name for p in agent.state.iterdir())
    assert names[0] == "agent.db"
    assert len(names) == 3, names
    assert all(
        n.startswith("agent.db.damaged-") and not n.endswith(("-wal", "-shm")) for n in names[1:]
    )


# --- output to a reader that went away ----------------------------------------------------


@pytest.mark.parametrize("args", [("vm", "policy", "show"), ("status", "--json")])
def test_a_reader_that_left_is_no_traceback(tmp_path: Path, args: tuple[str, ...]) -> None:
    """What `... | head` does to a writer, without the race: the pipe's reading end is
    closed before the command writes a byte."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [str(BIN_DIR / "dockyard-agent"), "--state", str(tmp_path / "agent"), *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert result.returncode == errors.EXIT_PIPE
    assert result.stderr == ""


def test_setting_aside_twice_in_one_second_keeps_both(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from dockyard.agent.state import set_aside

    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    asides = []
    for content in (b"first", b"second"):
        tmp_path.joinpath("agent.db").write_bytes(content)
        asides.append(set_aside(tmp_path, now))
    assert [a.read_bytes() for a in asides] == [b"first", b"second"]
