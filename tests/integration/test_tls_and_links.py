"""TLS with a test CA (trustme), a wrong CA refused, plain http only to loopback."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
import trustme

from dockyard.agent.errors import EXIT_UNREACHABLE, InsecureURL, LinkRefused, LinkUnavailable
from dockyard.agent.link import check_url, retry_after
from dockyard.agent.runner import backoff
from dockyard.cloud.store.db import Database

from ..factories import enrolment_secret, make_world
from ..procs import BIN, Agent, Cloud, eventually, free_port


@pytest.fixture(scope="module")
def tls_cloud(pg_url: str, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    trustme.CA().cert_pem.write_to_path(str(folder / "wrong-ca.pem"))
    server = Cloud(pg_url, folder / "data", tls=(folder / "cert.pem", folder / "key.pem"))
    server.verify = ssl.create_default_context(cafile=str(folder / "ca.pem"))
    server.start()
    yield server, folder
    server.stop()


def test_agent_docks_over_tls_with_the_right_ca(tls_cloud, pg: Database, tmp_path: Path) -> None:
    server, folder = tls_cloud
    world = make_world(pg)
    agent = Agent(tmp_path / "agent")
    out = agent.dock(server.url, enrolment_secret(world), "--ca-bundle", str(folder / "ca.pem"))
    assert "docked" in out.stdout


def test_a_wrong_ca_is_refused(tls_cloud, pg: Database, tmp_path: Path) -> None:
    server, folder = tls_cloud
    world = make_world(pg)
    agent = Agent(tmp_path / "agent")
    out = agent.cli(
        "dock",
        server.url,
        "--ca-bundle",
        str(folder / "wrong-ca.pem"),
        input=enrolment_secret(world),
        check=False,
    )
    assert out.returncode == EXIT_UNREACHABLE
    assert "CERTIFICATE_VERIFY_FAILED" in out.stderr
    out = agent.cli("dock", server.url, input=enrolment_secret(world), check=False)  # system CAs
    assert out.returncode == EXIT_UNREACHABLE
    assert "CERTIFICATE_VERIFY_FAILED" in out.stderr
    assert not list(agent.state.glob("*.key")), "a failed dock leaves no key behind"


def test_plain_http_only_to_loopback() -> None:
    assert check_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    assert check_url("http://[::1]:8080") == "http://[::1]:8080"
    assert check_url("https://cloud.example.com") == "https://cloud.example.com"
    for bad in ("http://cloud.example.com", "http://10.0.0.1", "ftp://x", "cloud.example.com"):
        with pytest.raises(InsecureURL):
            check_url(bad)


def test_token_never_on_the_command_line(tmp_path: Path) -> None:
    agent = Agent(tmp_path / "agent")
    out = agent.cli("dock", "http://127.0.0.1:1", "--token", "x", check=False)
    assert out.returncode == 2
    assert "unrecognized arguments" in out.stderr


def _waits(failures: list[Exception], **kw: float) -> list[float]:
    """The waits the runner's back-off chooses for a round failing with these, in turn."""
    waits: list[float] = []
    pending = list(failures)

    def round_() -> None:
        if pending:
            raise pending.pop(0)

    backoff(sleep=waits.append, **kw)(round_)
    return waits


def test_backoff_is_jittered_capped_and_honours_retry_after() -> None:
    down = LinkUnavailable("down")
    waits = _waits([down] * 20, base=1.0, cap=900.0)
    assert len(waits) == 20
    assert all(0 <= w <= 900 for w in waits)
    assert max(waits[:3]) <= 4
    assert max(waits[12:]) > 60  # grows toward the cap
    assert len(set(waits)) == 20, "jittered, not a fixed schedule"
    assert _waits([LinkUnavailable("busy", retry_after=120)], cap=900)[0] >= 120
    assert _waits([LinkUnavailable("busy", retry_after=5000)], cap=900)[0] <= 900
    # A round that succeeds starts the count again: the next failure waits at most base.
    waits = []
    retrying = backoff(sleep=waits.append, base=1.0)
    for _ in range(2):
        pending = [down] * 10

        def round_() -> None:
            if pending:
                raise pending.pop()

        retrying(round_)
    assert len(waits) == 20
    assert waits[10] <= 1
    # Refused for who we are (401) is not retried: the runner settles or stops.
    with pytest.raises(LinkRefused):
        _waits([LinkRefused(401, "invalid_client", "revoked")])
    assert _waits([LinkRefused(409, "conflict", "again")]) != []


def _answer(**headers: str) -> httpx.Response:
    return httpx.Response(503, headers=headers)


def test_retry_after_in_both_forms() -> None:
    """RFC 9110 10.2.3: delay-seconds, or an HTTP-date read against the answer's Date."""
    assert retry_after(_answer(**{"Retry-After": "120"})) == 120
    assert retry_after(_answer()) is None
    assert retry_after(_answer(**{"Retry-After": "soon"})) is None
    assert retry_after(_answer(**{"Retry-After": "-5"})) is None
    date = "Sun, 06 Nov 1994 08:49:37 GMT"
    for form in (
        "Sun, 06 Nov 1994 08:51:37 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:51:37 GMT",  # obsolete RFC 850
        "Sun Nov  6 08:51:37 1994",  # obsolete asctime
    ):
        assert retry_after(_answer(**{"Retry-After": form, "Date": date})) == 120, form
    # A date already past asks for no wait; without Date the agent's own clock is used.
    assert retry_after(_answer(**{"Retry-After": date, "Date": date})) == 0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=300), usegmt=True)
    assert 290 <= (retry_after(_answer(**{"Retry-After": later})) or 0) <= 300


@pytest.fixture
def proxy(tmp_path: Path):
    """proxy.py (PyPI), a real forward proxy that asks for credentials (407 without)."""
    port = free_port()
    log = open(tmp_path / "proxy.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            str(BIN / "proxy"),
            *("--hostname", "127.0.0.1", "--port", str(port), "--basic-auth", "dock:s3cret"),
            *("--num-workers", "1", "--num-acceptors", "1"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    eventually(lambda: _listening(port), what="the proxy to listen")
    yield port
    proc.terminate()
    proc.wait(10)
    log.close()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_proxy_that_asks_for_credentials(
    tls_cloud, proxy: int, pg: Database, tmp_path: Path
) -> None:
    server, folder = tls_cloud
    world = make_world(pg)
    ca = ("--ca-bundle", str(folder / "ca.pem"))
    no_bypass = {"NO_PROXY": "", "no_proxy": ""}

    wrong = {"HTTPS_PROXY": f"http://dock:wrong@127.0.0.1:{proxy}"} | no_bypass
    agent = Agent(tmp_path / "refused", env=wrong)
    out = agent.cli("dock", server.url, *ca, input=enrolment_secret(world), check=False)
    assert out.returncode == EXIT_UNREACHABLE
    assert "407" in out.stderr, out.stderr

    # The same wrong proxy is skipped for hosts NO_PROXY names.
    bypass = wrong | {"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    agent = Agent(tmp_path / "bypass", env=bypass)
    assert "docked" in agent.cli("dock", server.url, *ca, input=enrolment_secret(world)).stdout

    right = {"HTTPS_PROXY": f"http://dock:s3cret@127.0.0.1:{proxy}"} | no_bypass
    agent = Agent(tmp_path / "through", env=right)
    assert "docked" in agent.cli("dock", server.url, *ca, input=enrolment_secret(world)).stdout
    assert json.loads(agent.cli("status", "--json").stdout)["links"][0]["url"] == server.url
