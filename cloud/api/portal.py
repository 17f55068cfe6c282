"""The tenant portal at `/portal/`: the files `make web` builds from `web/` into
`cloud/portal/static/` (shipped inside the package, never committed), served by the cloud
itself so the page works with no internet.

- Every client-side route (`/portal/t/.../vms`) answers `index.html`, which the browser's
  router then reads; `index.html` is never cached, so a new build shows at the next load.
- `/portal/assets/*` are Vite's content-hashed files: a year's cache, immutable. A missing
  one is a 404, never `index.html` (a stale tab must not run HTML as a script).
- A strict Content-Security-Policy holds the page to its own origin: no inline script, no
  other host, and no framing (`frame-ancestors 'none'`, against click-jacking).
- Without a build the portal answers a 503 page that says to run `make web`.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

STATIC = Path(__file__).resolve().parents[1] / "portal" / "static"
PREFIX = "/portal"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
IMMUTABLE = "public, max-age=31536000, immutable"
# Top-level public files (the icon) keep their names across builds: a short cache.
PUBLIC = "public, max-age=3600"

MISSING = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Dockyard portal not built</title></head>
<body>
<main>
<h1>The portal is not built on this cloud</h1>
<p>Its files are missing from <code>cloud/portal/static/</code>. Run <code>make web</code>
in the source tree (it needs Node.js and npm), then reload this page.</p>
<p>The API itself answers at <a href="/graphql">/graphql</a>.</p>
</main>
</body>
</html>
"""


def _headers(cache: str) -> dict[str, str]:
    return {**HEADERS, "Cache-Control": cache}


def _index(static: Path) -> Response:
    index = static / "index.html"
    if not index.is_file():
        return HTMLResponse(MISSING, status_code=503, headers=_headers("no-store"))
    return FileResponse(index, media_type="text/html", headers=_headers("no-cache"))


def _not_found() -> Response:
    return HTMLResponse("<!doctype html><title>Not found</title><p>Not found.</p>", 404)


def routes(static: Path = STATIC) -> list[Route]:
    async def root(request: Request) -> Response:
        return RedirectResponse(PREFIX + "/", status_code=308)

    async def asset(request: Request) -> Response:
        name: str = request.path_params["name"]
        path = static / "assets" / name
        if "/" in name or name.startswith(".") or not path.is_file():
            return _not_found()
        return FileResponse(path, headers=_headers(IMMUTABLE))

    async def page(request: Request) -> Response:
        rest: str = request.path_params["rest"]
        # A file the build put at the top (favicon.svg), else the app for a client route.
        if rest and "/" not in rest and not rest.startswith(".") and rest != "index.html":
            path = static / rest
            if path.is_file():
                return FileResponse(path, headers=_headers(PUBLIC))
        if rest.startswith("assets/"):
            return _not_found()
        return _index(static)

    return [
        Route(PREFIX, root, methods=["GET"]),
        Route(PREFIX + "/assets/{name}", asset, methods=["GET"]),
        Route(PREFIX + "/{rest:path}", page, methods=["GET"]),
    ]
