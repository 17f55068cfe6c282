"""The agent's logging: every record, ours and the libraries', on standard error, rendered by
the formatter both sides share (`protocol/logs.py`: readable text, or JSON lines when asked).

The format comes from `--log-format` or `DOCKYARD_AGENT_LOG_FORMAT`. The shared formatter is
built when the first record is formatted, not at start: building it imports structlog and the
protocol's models, about 0.2 s measured on a `vault` command, which logs nothing on most runs.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import TextIO

FORMAT_ENV = "DOCKYARD_AGENT_LOG_FORMAT"
# The protocol module holds the list; it is repeated here only so that parsing the command
# line does not import the protocol (tests/unit/test_logs.py keeps the two equal).
FORMATS = ("text", "json")

log = logging.getLogger("dockyard.agent")


class _Deferred(logging.Formatter):
    def __init__(self, fmt: str, stream: TextIO) -> None:
        super().__init__()
        self._fmt_name, self._stream = fmt, stream
        self._real: logging.Formatter | None = None

    def format(self, record: logging.LogRecord) -> str:
        if self._real is None:
            from .protocol import logs

            self._real = logs.formatter(
                "json" if self._fmt_name == "json" else "text", self._stream
            )
        return self._real.format(record)


def default_format() -> str:
    from .settings import AgentSettings

    return AgentSettings.from_env().log_format


def _thread_died(args: threading.ExceptHookArgs) -> None:
    """A module thread that dies logs one record, not a raw traceback on standard error."""
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    name = args.thread.name if args.thread else "?"
    log.error(
        "thread %s stopped on an unexpected error",
        name,
        exc_info=args.exc_value,
    )


def configure(
    fmt: str, *, verbose: bool = False, quiet_http: bool = False, stream: TextIO | None = None
) -> None:
    """`quiet_http` keeps httpx's line per request out of a one-shot command's output, which
    is one line on failure; `run` keeps it (a poll line is its sign of life), `-v` too."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_Deferred(fmt, stream))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if quiet_http and not verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.captureWarnings(True)
    threading.excepthook = _thread_died
