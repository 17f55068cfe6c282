"""Fixtures: one fresh PostgreSQL database per test run, SQLite beside it, real servers."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard.cloud.store.db import Database
from dockyard.cloud.store.migrate import upgrade

from .pg import fresh_database
from .procs import Cloud

warnings.filterwarnings("ignore", message="EdDSA is deprecated")
# The vault CLI keeps a files cache under the user's cache folder: the tests' own, here
# (subprocesses inherit it), so a run never writes into the home of whoever runs it.
os.environ.setdefault("DOCKYARD_VAULT_CACHE", tempfile.mkdtemp(prefix="dockyard-vault-cache-"))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        db = Database(url)
        upgrade(db.engine)
        db.dispose()
        yield url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'dockyard.db'}"
    db = Database(url)
    upgrade(db.engine)
    db.dispose()
    return url


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Store and domain tests run on both databases."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture(scope="session")
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def pg(pg_url: str) -> Iterator[Database]:
    database = Database(pg_url)
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def cloud(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    """One real cloud process (uvicorn on PostgreSQL) shared by the integration tests."""
    server = Cloud(pg_url, tmp_path_factory.mktemp("cloud")).start()
    yield server
    server.stop()


@pytest.fixture
def agent_dir(tmp_path: Path) -> Path:
    return tmp_path / "agent-state"


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory):
    """A real S3 (SeaweedFS), one per test session."""
    from .peers.seaweed import SeaweedS3

    server = SeaweedS3(tmp_path_factory.mktemp("seaweed")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def vcsim():
    """One vCenter simulator (3 hosts, 2 VMs per pool, 2 datastores), for the session."""
    from .peers.vsphere_sim import Vcsim

    server = Vcsim(host=3, vm=2, ds=2).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto():
    """moto's server for EC2 and CloudWatch, one per session; tests reset it."""
    from .peers.aws import Moto

    server = Moto().start()
    yield server
    server.stop()


@pytest.fixture
def smtp():
    """A real SMTP server (aiosmtpd) in the test process; `.messages` holds what arrived."""
    from .peers.mail import Mailbox

    box = Mailbox().start()
    yield box
    box.stop()
