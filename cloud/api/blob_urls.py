"""`/blobs/<tenant>/<key>`: the local blob directory behind URLs the cloud signed.

Only for the embedded default (S3 serves its own presigned URLs). A request needs a valid,
unexpired signed token (`sig`, see `LocalBlobs.signature`) naming its tenant and key; the
method must be the one signed. GET honours a byte range; a PUT signed as `put_new` creates
only if absent.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dockyard.cloud.api import bodies
from dockyard.cloud.blobs import METHODS, BadBlobURL, LocalBlobs
from dockyard.cloud.services import Services

MAX_PUT_BYTES = 64 * 1024 * 1024


def _problem(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def _range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) of a single `bytes=a-b` range; None for the whole object."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    start_s, _, end_s = spec.partition("-")
    if unit.strip() != "bytes" or "," in spec or not start_s.isdigit():
        raise ValueError("only one bytes=a-b range")
    start = int(start_s)
    end = int(end_s) + 1 if end_s.isdigit() else size
    return start, min(end, size)


async def serve_blob(request: Request) -> Response:
    svc: Services = request.app.state.services
    store = svc.blobs
    if not isinstance(store, LocalBlobs):
        return _problem(404, "not_found", "this cloud keeps its blobs in S3")
    tenant = request.path_params["tenant"]
    key = request.path_params["key"]
    try:
        tenant_id = uuid.UUID(tenant)
        path = store.path(tenant_id, key)
    except ValueError:
        return _problem(400, "invalid_request", "not a blob URL")
    try:
        op = store.check(tenant, key, request.query_params.get("sig", ""), time.time())
    except BadBlobURL as e:
        return _problem(403, e.code, str(e))
    if request.method != METHODS[op]:
        return _problem(405, "wrong_method", f"this URL allows {METHODS[op]} only")

    if op in ("put", "put_new"):
        try:
            body = await bodies.read_limited(request, MAX_PUT_BYTES)
        except bodies.BodyRefused as e:
            return _problem(e.status, e.error, e.message)
        created = await anyio.to_thread.run_sync(store.write, path, body, op == "put_new")
        if not created:
            return _problem(412, "exists", "the object exists (If-None-Match: *)")
        return Response(status_code=200)
    if op == "delete":
        path.unlink(missing_ok=True)
        return Response(status_code=204)
    if not path.is_file():
        return _problem(404, "not_found", "no such object")
    size = path.stat().st_size
    if op == "head":
        return Response(status_code=200, headers={"Content-Length": str(size)})
    try:
        span = _range(request.headers.get("range", ""), size)
    except ValueError as e:
        return _problem(416, "bad_range", str(e))
    if span is None:
        data = await anyio.to_thread.run_sync(path.read_bytes)
        return Response(data, media_type="application/octet-stream")
    data = await anyio.to_thread.run_sync(_read_span, path, span)
    headers = {"Content-Range": f"bytes {span[0]}-{span[0] + len(data) - 1}/{size}"}
    return Response(data, status_code=206, headers=headers, media_type="application/octet-stream")


def _read_span(path: Path, span: tuple[int, int]) -> bytes:
    with open(path, "rb") as f:
        f.seek(span[0])
        return f.read(max(0, span[1] - span[0]))


def routes() -> list[Route]:
    return [
        Route(
            "/blobs/{tenant}/{key:path}",
            serve_blob,
            methods=["GET", "PUT", "DELETE", "HEAD"],
            name="blobs",
        )
    ]
