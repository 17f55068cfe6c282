"""The log line both sides write: its fields in text and JSON, `extra=` fields kept, the
scrubber masking every shape of secret the cloud and agent handle, and the agent building
its formatter only when it first logs."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading

import pytest

from dockyard.agent import logs as agent_logs
from dockyard.agent.protocol import logs
from dockyard.cloud import logs as cloud_logs

SECRETS = {
    "bearer": ("Authorization: Bearer dy_api_9f8e7d6c5b4a39281706f5e4d3c2b1a0", "9f8e7d6c5b4a"),
    "jwt": (
        "token eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJlLWJ5dGVz was issued",
        "eyJzdWIiOiJhZ2VudCJ9",
    ),
    "pem": (
        "key -----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIGq5\n-----END PRIVATE KEY-----",
        "MC4CAQAwBQYDK2VwBCIEIGq5",
    ),
    "proxy password": ("via http://ops:hunter2hunter2@proxy.example:3128", "hunter2hunter2"),
    "blob signature": ("PUT /blobs/t/k?exp=1767225600&sig=ab12cd34ef56ab12cd34", "ab12cd34ef56"),
    "notice link": ("GET /vm/notices/answer?t=nl.eyJ4IjoxfQ.c2ln HTTP/1.1", "eyJ4IjoxfQ"),
    "s3 presigned": (
        "https://s3.example/b/k?X-Amz-Credential=AKIAEXAMPLE%2F20261203&X-Amz-Signature=0a1b2c3d4e5f",
        "0a1b2c3d4e5f",
    ),
}


def render(fmt: logs.LogFormat, record: logging.LogRecord) -> str:
    return logs.formatter(fmt, io.StringIO()).format(record)


def record(msg: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    logger = logging.getLogger("dockyard.test")
    exc_info = None
    if exc:
        try:
            raise RuntimeError("the cloud sent Bearer dy_api_secretsecretsecret")
        except RuntimeError:
            exc_info = sys.exc_info()
    return logger.makeRecord(
        logger.name, logging.WARNING, __file__, 1, msg, args, exc_info, extra=extra
    )


def test_a_json_line_has_the_four_fields_first_then_the_extras() -> None:
    line = render("json", record("job %s done", "j-1", request_id="r-7", agent_id="a-3"))
    assert "\n" not in line
    fields = json.loads(line)
    assert list(fields)[:4] == ["at", "level", "logger", "event"]
    assert fields["level"] == "warning"
    assert fields["logger"] == "dockyard.test"
    assert fields["event"] == "job j-1 done"
    assert fields["request_id"] == "r-7"
    assert fields["agent_id"] == "a-3"
    assert fields["at"].endswith("Z")


def test_an_exception_is_one_json_field_and_scrubbed() -> None:
    line = render("json", record("it failed", exc=True))
    assert "\n" not in line
    fields = json.loads(line)
    assert "RuntimeError" in fields["exception"]
    assert "Traceback" in fields["exception"]
    assert "secretsecret" not in line


def test_text_is_one_readable_line_that_keeps_the_extras() -> None:
    line = render("text", record("poll answered", request_id="r-7", status=200))
    assert "\n" not in line
    assert "poll answered" in line
    assert "request_id=r-7" in line
    assert "status=200" in line
    assert "[dockyard.test]" in line
    assert not line.startswith("{")


def test_values_that_json_cannot_hold_are_written_as_text() -> None:
    import uuid

    agent = uuid.UUID(int=7)
    fields = json.loads(render("json", record("seen", agent_id=agent, at_most={1, 2})))
    assert fields["agent_id"] == str(agent)


@pytest.mark.parametrize("fmt", logs.FORMATS)
@pytest.mark.parametrize("case", sorted(SECRETS))
def test_every_shape_of_secret_is_masked_in_the_message(fmt: logs.LogFormat, case: str) -> None:
    text, secret_part = SECRETS[case]
    assert secret_part in text
    line = render(fmt, record("%s", text))
    assert secret_part not in line
    assert logs.MASK in line


@pytest.mark.parametrize(
    "field", ["api_token", "password", "passphrase", "secret_key", "authorization", "token"]
)
def test_fields_named_like_secrets_are_masked_whatever_their_value(field: str) -> None:
    fields = json.loads(render("json", record("x", **{field: "plainvalue123"})))
    assert fields[field] == logs.MASK


def test_nested_secrets_are_masked_and_harmless_fields_kept() -> None:
    fields = json.loads(
        render(
            "json",
            record(
                "x",
                headers={"Authorization": "Bearer abcdefabcdef", "Accept": "json"},
                token_url="https://dock.example/agent/v1/token",
                key_file="/var/lib/dockyard-agent/default.key",
                url="/agent/v1/poll?after=12&wait=25&tag=ab",
            ),
        )
    )
    assert fields["headers"] == {"Authorization": logs.MASK, "Accept": "json"}
    assert fields["token_url"] == "https://dock.example/agent/v1/token"
    assert fields["key_file"] == "/var/lib/dockyard-agent/default.key"
    assert fields["url"] == "/agent/v1/poll?after=12&wait=25&tag=ab"


def test_the_agent_lists_the_same_formats_as_the_protocol() -> None:
    assert tuple(agent_logs.FORMATS) == logs.FORMATS


def test_the_agent_imports_structlog_only_when_it_first_logs() -> None:
    script = (
        "import logging, sys\n"
        "from dockyard.agent import logs\n"
        "logs.configure('json')\n"
        "assert 'structlog' not in sys.modules, 'imported at configure'\n"
        "logging.getLogger('dockyard.agent.x').warning('first', extra={'n': 1})\n"
        "assert 'structlog' in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    fields = json.loads(out.stderr)
    assert (fields["event"], fields["n"], fields["logger"]) == ("first", 1, "dockyard.agent.x")


def test_a_dying_thread_in_the_agent_logs_one_record() -> None:
    stream = io.StringIO()
    saved = logging.getLogger().handlers[:], threading.excepthook
    try:
        agent_logs.configure("json", stream=stream)

        def boom() -> None:
            raise ValueError("module thread broke")

        thread = threading.Thread(target=boom, name="vm-rounds")
        thread.start()
        thread.join()
    finally:
        logging.getLogger().handlers[:] = saved[0]
        threading.excepthook = saved[1]
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    fields = json.loads(lines[0])
    assert fields["level"] == "error"
    assert "vm-rounds" in fields["event"]
    assert "ValueError: module thread broke" in fields["exception"]


def test_uvicorn_access_lines_carry_their_parts_as_fields() -> None:
    stream = io.StringIO()
    saved = logging.getLogger().handlers[:], logging.getLogger().level
    try:
        cloud_logs.configure("json", "info", stream=stream)
        logging.getLogger(cloud_logs.ACCESS_LOGGER).info(
            '%s - "%s %s HTTP/%s" %d',
            "127.0.0.1:5000",
            "GET",
            "/vm/notices/answer?t=abcdefsecret",
            "1.1",
            200,
        )
    finally:
        logging.getLogger().handlers[:] = saved[0]
        logging.getLogger().setLevel(saved[1])
    fields = json.loads(stream.getvalue())
    assert fields["method"] == "GET"
    assert fields["status"] == 200
    assert fields["path"] == "/vm/notices/answer?t=***"
    assert "abcdefsecret" not in stream.getvalue()
