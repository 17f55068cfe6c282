"""The page a notice's skip and delay links open, served by a standalone agent.

GET only shows what the link would do, with a button; the answer is taken on POST. Mail
scanners and link previews fetch every URL in a message, and a single-use link consumed by
a scanner would be lost to its owner.

The server faces whatever can reach its port: a body is read only when its declared length
is a plain number within `MAX_FORM_BYTES`, and a client that declares more than it sends is
dropped after `timeout_s`, so no request holds one of its threads for good.
"""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from ...protocol.links import BadLink
from ...protocol.notices import ANSWER_PATH as PATH

MAX_FORM_BYTES = 4096
TIMEOUT_S = 10.0
"""How long a connection may stay silent (a request line, a header, a body half sent)."""
_LENGTH = re.compile(r"[0-9]+")


class AnswerServer:
    def __init__(
        self, host: str, port: int, answer: Callable[[str], str], *, timeout_s: float = TIMEOUT_S
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "dockyard-agent"
            # The socket's timeout (StreamRequestHandler sets it); a read that times out
            # ends the connection quietly (BaseHTTPRequestHandler catches TimeoutError).
            timeout = timeout_s

            def log_message(self, format: str, *args: object) -> None:
                return

            def _page(self, status: int, title: str, body: str) -> None:
                data = (
                    "<!doctype html><meta charset=utf-8><title>"
                    f"{html.escape(title)}</title><h1>{html.escape(title)}</h1>{body}"
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                token = parse_qs(url.query).get("t", [""])[0]
                if url.path != PATH or not token:
                    self._page(404, "Not found", "")
                    return
                self._page(
                    200,
                    "Answer this notice",
                    f'<form method="post" action="{PATH}">'
                    f'<input type="hidden" name="t" value="{html.escape(token)}">'
                    '<button type="submit">Confirm</button></form>',
                )

            def do_POST(self) -> None:
                if urlparse(self.path).path != PATH:
                    self._page(404, "Not found", "")
                    return
                declared = (self.headers.get("Content-Length") or "0").strip()
                if not _LENGTH.fullmatch(declared):
                    # Not a length (`abc`, `-1`, `1e3`): `read` would raise or wait for the end.
                    self.close_connection = True
                    self._page(400, "Bad request", "<p>Content-Length is not a length.</p>")
                    return
                if len(declared) > 9 or int(declared) > MAX_FORM_BYTES:
                    self.close_connection = True  # the body is left unread
                    limit = f"<p>A form is at most {MAX_FORM_BYTES} bytes.</p>"
                    self._page(413, "Too large", limit)
                    return
                length = int(declared)
                form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
                try:
                    message = outer.answer(form.get("t", [""])[0])
                except BadLink as e:
                    self._page(400, "This link cannot be used", f"<p>{html.escape(str(e))}</p>")
                    return
                self._page(200, "Thank you", f"<p>{html.escape(message)}</p>")

        self.answer = answer
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> AnswerServer:
        self._thread.start()
        return self

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
