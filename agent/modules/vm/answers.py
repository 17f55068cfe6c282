"""The page a notice's skip and delay links open, served by a standalone agent.

GET only shows what the link would do, with a button; the answer is taken on POST. Mail
scanners and link previews fetch every URL in a message, and a single-use link consumed by
a scanner would be lost to its owner.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from ...protocol.links import BadLink
from ...protocol.notices import ANSWER_PATH as PATH

MAX_FORM_BYTES = 4096


class AnswerServer:
    def __init__(self, host: str, port: int, answer: Callable[[str], str]) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "dockyard-agent"

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
                length = int(self.headers.get("Content-Length") or 0)
                if urlparse(self.path).path != PATH or length > MAX_FORM_BYTES:
                    self._page(404, "Not found", "")
                    return
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
