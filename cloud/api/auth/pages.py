"""What the /auth routes answer: small HTML pages for a person in a browser, JSON for the
portal's scripts, all with headers that forbid framing (clickjacking) and caching, and no
Referer (the callback's URL carries an authorization code)."""

from __future__ import annotations

import html
from typing import Any

from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def guarded(response: Response) -> Response:
    response.headers.update(HEADERS)
    return response


def page(title: str, message: str, status: int) -> Response:
    body = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)} · Dockyard</title></head><body><main>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>"
        '<p><a href="/">Back to Dockyard</a></p></main></body></html>'
    )
    return guarded(HTMLResponse(body, status))


def answer(body: Any, status: int = 200) -> Response:
    return guarded(JSONResponse(body, status))


def error(message: str, status: int) -> Response:
    return answer({"error": message}, status)


def redirect(url: str) -> Response:
    return guarded(RedirectResponse(url, 303))
