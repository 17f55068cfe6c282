"""The shape of a log line and what it may never carry: one rule for the cloud and the agent.

Both processes log through the standard library (their own loggers, uvicorn's, httpx's,
botocore's) and one structlog `ProcessorFormatter` renders every record: readable text by
default, one JSON object per line when asked. The fields are the same on both sides, so one
collector reads both: `at` (ISO 8601, UTC), `level`, `logger`, `event` (the message), the
record's `extra=` fields, and `exception` (the formatted traceback) when there is one.

structlog rather than python-json-logger: the latter is a JSON formatter only, so readable
text that keeps the `extra=` fields (request and agent ids) would need a second formatter of
our own, and the scrubbing below would have to be written into both. Here every record goes
through one chain (fields, extras, exception, scrub) and only the last step, the renderer,
differs between text and JSON.

Secrets are kept out by the code that logs; `scrub` is the net under it, for what a library
logs on its own: values of fields named like secrets, `Bearer`/`Basic` credentials, compact
JWTs (access tokens, client assertions), PEM blocks, passwords in URLs, and the values of
URL query parameters other than the few known to be harmless (signed blob URLs and notice
links carry their signature in the query, and uvicorn and httpx log URLs whole).

It lives in `protocol/` because the cloud may import nothing else of the agent; importing it
costs the protocol's models, so the agent loads it only when its first record is formatted.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

LogFormat = Literal["text", "json"]
FORMATS: tuple[LogFormat, ...] = ("text", "json")
MASK = "***"

# A field whose name ends so holds a secret whatever its value looks like ("token_url",
# "key_file" and "idempotency_key" do not).
_SECRET_FIELD = re.compile(
    r"(token|secret|secret_key|api_key|private_key|password|passphrase|assertion|"
    r"authorization|cookie|credentials?)$",
    re.IGNORECASE,
)
# Query parameters whose values are safe to keep: the poll's, and an expiry.
_PLAIN_PARAMS = "after|wait|tag|exp"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(?:-----END [A-Z0-9 ]+-----|$)", re.S), MASK),
    (re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE), rf"\1 {MASK}"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), MASK),
    (re.compile(r"(://[^/\s:@]+):[^/\s@]+@"), rf"\1:{MASK}@"),
    (re.compile(rf"([?&](?!(?:{_PLAIN_PARAMS})=)[^=&\s\"'#]+)=[^&\s\"'#]+"), rf"\1={MASK}"),
)
# Fields the standard library or uvicorn add that say nothing a reader needs.
_NOISE = ("color_message", "taskName")
_FIRST = ("at", "level", "logger", "event")


def scrub_text(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _scrubbed(key: str, value: Any) -> Any:
    if _SECRET_FIELD.search(key) and value is not None and not isinstance(value, bool):
        return MASK
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {k: _scrubbed(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed("", v) for v in value]
    return value


def scrub(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Mask what looks like a secret in every field, the message and traceback included."""
    return {key: _scrubbed(key, value) for key, value in event.items()}


def _tidy(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Drop noise; put the four fields every line has first, the record's extras after."""
    for key in _NOISE:
        event.pop(key, None)
    if event.get("stack_info"):
        event["stack"] = event.pop("stack_info")
    first: EventDict = {key: event.pop(key) for key in _FIRST if key in event}
    first.update(event)
    return first


def formatter(fmt: LogFormat, stream: TextIO) -> logging.Formatter:
    """The formatter for a handler writing to `stream` (text is coloured on a terminal)."""
    renderer: Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(default=str)
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=stream.isatty(),
            timestamp_key="at",
            pad_event_to=0,
            sort_keys=False,
            exception_formatter=structlog.dev.plain_traceback,
        )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="at"),
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _tidy,
            structlog.processors.format_exc_info,
            scrub,
            renderer,
        ],
    )
