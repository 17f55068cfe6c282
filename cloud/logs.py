"""The cloud's logging: every record, ours and uvicorn's, on standard error, rendered by the
formatter the agent shares (`dockyard.agent.protocol.logs`): readable text by default, JSON
lines with `DOCKYARD_LOG_FORMAT=json`.

uvicorn is started with `log_config=None` (server.py), so it installs no handlers of its own
and its records reach this one; an access line also carries `client`, `method`, `path` and
`status` as fields, its query values masked like any URL's.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from dockyard.agent.protocol import logs

ACCESS_LOGGER = "uvicorn.access"


class _AccessFields(logging.Filter):
    """uvicorn's access record keeps its parts in `args`; give them names."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.name == ACCESS_LOGGER and isinstance(args, tuple) and len(args) == 5:
            record.client, record.method, record.path, _, record.status = args
        return True


def configure(fmt: logs.LogFormat, level: str, stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter(fmt, stream))
    handler.addFilter(_AccessFields())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's own loggers through this handler too, whatever configured them before (a
    # uvicorn.Config with its default log_config gives them handlers and stops propagation).
    for name in ("uvicorn", "uvicorn.error", ACCESS_LOGGER):
        named = logging.getLogger(name)
        named.handlers[:] = []
        named.propagate = True
        named.disabled = False
        named.setLevel(logging.NOTSET)
    # alembic names each of its plugins at INFO on every start.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    logging.captureWarnings(True)
