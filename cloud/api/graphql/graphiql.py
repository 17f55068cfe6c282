"""GraphiQL at GET /graphql, with every file it loads served by the cloud itself
(`/graphql/static/...`, fetched at install time, see `assets.py`). A Content-Security-Policy
of 'self' holds the page to that: a file that tried to load from another host would be
refused by the browser, not silently work online and hang offline."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from . import assets

STATIC = Path(__file__).with_name("static")
PREFIX = "/graphql/static"
OWN = frozenset({"start.js", "page.css"})

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Dockyard GraphQL</title>
<link rel="stylesheet" href="{PREFIX}/graphiql.min.css">
<link rel="stylesheet" href="{PREFIX}/page.css">
</head>
<body>
<form id="token-form" hidden>
  <label for="token">API token</label>
  <input id="token" type="password" autocomplete="off" placeholder="dy_pat_...">
  <button type="submit">Use it</button>
  <p>Asked once: this tab keeps it until closed.</p>
</form>
<button id="forget" type="button">Forget token</button>
<div id="graphiql" hidden></div>
<script src="{PREFIX}/react.production.min.js"></script>
<script src="{PREFIX}/react-dom.production.min.js"></script>
<script src="{PREFIX}/graphiql.min.js"></script>
<script src="{PREFIX}/start.js"></script>
</body>
</html>
"""

MISSING = (
    "GraphiQL's files are not installed on this cloud: run `make venv` (or "
    "`python -m dockyard.cloud.api.graphql.assets`) where it is installed. "
    "The API itself answers POST /graphql."
)


def page() -> Response:
    if not assets.present():
        return PlainTextResponse(MISSING, status_code=503)
    return HTMLResponse(PAGE, headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"})


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    if name in OWN:
        path = STATIC / name
    elif name in assets.SERVED:
        path = assets.VENDOR / name
    else:
        return PlainTextResponse("not found", status_code=404)
    if not path.is_file():
        return PlainTextResponse("not found", status_code=404)
    return FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})


def routes() -> list[Route]:
    return [Route(PREFIX + "/{name}", static, methods=["GET"])]
