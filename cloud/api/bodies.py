"""Request bodies, bounded before they are parsed: every route that reads a body reads it
through `read_limited`, and every JSON body goes through `loads`.

A body is refused with 413 as soon as its declared or streamed size passes the route's
limit, before the rest is read. A JSON body is refused with 400 when its nesting passes
`MAX_JSON_DEPTH`, found by a scan of its brackets outside strings before `json.loads` sees
it: Python's parser recurses once per level, and 10,000 levels raised RecursionError (a
500). Bodies that are not UTF-8 JSON (UTF-16, a byte-order mark, lone surrogates, NaN) are
400s too, and so are numbers no column can hold (1e999, integers beyond 64 bits).
"""

from __future__ import annotations

import json
import re
from typing import Any

import anyio.to_thread
from starlette.requests import ClientDisconnect, Request

from dockyard.agent.protocol import MAX_JSON_DEPTH

# Bodies larger than this are scanned and decoded on a worker thread, so a megabyte of
# brackets never holds the event loop.
OFF_LOOP_BYTES = 64 * 1024

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPEN = frozenset(b"[{")
# A \uD800-\uDBFF escape not followed by a \uDC00-\uDFFF one, or the second without the
# first: json.loads makes a string no database or encoder will take.
_LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


class BodyRefused(Exception):
    """A body this route will not parse; `status` is a 4xx, `error` a code, `message` for
    the person sending it."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def too_large(limit: int) -> BodyRefused:
    return BodyRefused(413, "body_too_large", f"request bodies are limited to {limit} bytes")


def check_declared(request: Request, limit: int) -> None:
    """Refuse at once a body whose Content-Length is over the limit (or not a number)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise too_large(limit)


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, read only while it stays within `limit` bytes."""
    check_declared(request, limit)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        # The caller went away mid-request (a restart, a lost link): nothing to answer.
        raise BodyRefused(400, "client_disconnected", "the request body was cut off") from None
    return b"".join(chunks)


def depth_over(body: bytes, limit: int) -> bool:
    """Whether the JSON text nests arrays and objects deeper than `limit`. Brackets inside
    strings do not count. An unterminated string runs to the end in one match (a string
    that could fail to close made the scan restart at every quote: quadratic, 22 s for
    64 KB of `{"` sent without a token); the parser then refuses that body anyway."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    for byte in _STRING.sub(b"", body).translate(None, _NOT_BRACKETS):
        if byte in _OPEN:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def decode(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """JSON from a bounded body, or `BodyRefused` (400) for anything else."""
    if depth_over(body, max_depth):
        raise BodyRefused(
            400, "too_deep", f"JSON bodies nest at most {max_depth} arrays or objects deep"
        )
    try:
        text = body.decode("utf-8")
        if text.startswith("\ufeff"):
            raise ValueError("a byte-order mark")
        if b"\\u" in body and _LONE_SURROGATE.search(body):
            raise ValueError("a lone surrogate")
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite, parse_int=_int64)
    except (ValueError, RecursionError):
        raise BodyRefused(
            400, "malformed_json", "the request body is not valid UTF-8 JSON"
        ) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("a number too large for a double")
    return value


def _int64(text: str) -> int:
    """Integers fit 64 bits: every integer the cloud stores does, and a larger one would
    reach the database as an overflow."""
    if len(text) > 20:
        raise ValueError("an integer too large")
    value = int(text)
    if not -(2**63) <= value < 2**63:
        raise ValueError("an integer too large")
    return value


async def loads(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`decode`, on a worker thread for large bodies."""
    if len(body) <= OFF_LOOP_BYTES:
        return decode(body, max_depth)
    return await anyio.to_thread.run_sync(decode, body, max_depth)
