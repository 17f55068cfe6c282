"""The standalone agent's notice-link server against what a raw socket can send: a length
that is not one, one too large, and a body shorter than declared. Each is answered or
dropped without a traceback, and the server goes on answering others."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from dockyard.agent.modules.vm.answers import MAX_FORM_BYTES, AnswerServer
from dockyard.agent.protocol.links import BadLink
from dockyard.agent.protocol.notices import ANSWER_PATH


def _answer(token: str) -> str:
    if token != "good":
        raise BadLink("this link is not valid")
    return "answered"


@pytest.fixture
def server() -> Iterator[AnswerServer]:
    answers = AnswerServer("127.0.0.1", 0, _answer, timeout_s=0.5).start()
    yield answers
    answers.shutdown()


def _exchange(port: int, request: bytes, wait: float = 5) -> bytes:
    """What the server sends back until it closes the connection (`wait` at most)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(request)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
        return received


def _post(length: str, body: bytes = b"") -> bytes:
    return (
        f"POST {ANSWER_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n\r\n"
    ).encode() + body


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@pytest.mark.parametrize("length", ["abc", "-1", "1e3", "+5", "٣"])
def test_a_length_that_is_not_a_number_is_400(
    server: AnswerServer, length: str, capfd: pytest.CaptureFixture[str]
) -> None:
    response = _exchange(server.port, _post(length, b"t=good"))
    assert _status(response) == 400
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("length", [str(MAX_FORM_BYTES + 1), "9" * 30])
def test_a_length_past_the_limit_is_413_and_nothing_is_read(
    server: AnswerServer, length: str, capfd: pytest.CaptureFixture[str]
) -> None:
    response = _exchange(server.port, _post(length))
    assert _status(response) == 413
    assert "Traceback" not in capfd.readouterr().err


def test_a_body_shorter_than_declared_is_dropped_after_the_timeout(
    server: AnswerServer, capfd: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    response = _exchange(server.port, _post("100", b"t=go"), wait=10)
    assert response == b"", "nothing answered to half a request"
    assert time.monotonic() - started < 5, "the connection was closed by the server's timeout"
    assert "Traceback" not in capfd.readouterr().err


def test_a_client_that_sends_nothing_does_not_block_the_others(server: AnswerServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as silent:
        silent.sendall(b"POST " + ANSWER_PATH.encode())  # and nothing more
        ok = _exchange(server.port, _post("6", b"t=good"))
        assert _status(ok) == 200
        assert b"answered" in ok
        silent.settimeout(5)
        assert silent.recv(100) == b"", "the silent one is dropped after the timeout"


def test_a_well_formed_answer_still_works(server: AnswerServer) -> None:
    assert _status(_exchange(server.port, _post("6", b"t=good"))) == 200
    assert _status(_exchange(server.port, _post("5", b"t=bad"))) == 400
    assert _status(_exchange(server.port, _post("0"))) == 400
