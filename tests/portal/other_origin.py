"""Another origin for the portal's security tests: Python's http.server on its own
127.0.0.1 port, serving pages the test writes (an attacker's form, a page that frames the
portal). Same host, another port: another origin, but the same site, so the browser still
attaches the cloud's SameSite=Lax cookie to what these pages send: the CSRF token and
`frame-ancestors` are what must stop them."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serving(folder: Path) -> Iterator[str]:
    """The folder's files at http://127.0.0.1:<port>/, while the block runs."""
    handler = functools.partial(_Quiet, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
