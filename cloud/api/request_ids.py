"""Every request gets an id, and no exception's text ever reaches a client.

`RequestIds` is the outermost middleware of the app: it takes the caller's `X-Request-ID`
when it is a plain token (a load balancer's), else makes one, keeps it in a context variable
for the request's log lines (`current()`), and echoes it in the answer. An exception nothing
else handled is logged once, with its traceback and the id, and the client gets a generic
500 that quotes only the id: the operator finds the line, the caller learns nothing of the
code.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

HEADER = "x-request-id"
_GIVEN = re.compile(r"^[A-Za-z0-9._\-]{8,64}$")
_CURRENT: contextvars.ContextVar[str] = contextvars.ContextVar("dockyard_request_id", default="")


def current() -> str:
    """The id of the request being served here, or "" outside one."""
    return _CURRENT.get()


def internal_error_message(request_id: str) -> str:
    return f"an unexpected error; quote request id {request_id} to the operator"


class RequestIds:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(HEADER.encode(), b"").decode("latin-1")
        request_id = given if _GIVEN.match(given) else uuid.uuid4().hex
        token = _CURRENT.set(request_id)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                headers.append((HEADER.encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception(
                "unexpected error",
                extra={
                    "request_id": request_id,
                    "method": scope.get("method", ""),
                    "path": scope.get("path", ""),
                },
            )
            if scope["type"] == "http" and not started:
                await _internal_error(send_with_id, request_id)
        finally:
            _CURRENT.reset(token)


async def _internal_error(send: Send, request_id: str) -> None:
    body = json.dumps(
        {"error": "internal_error", "message": internal_error_message(request_id)}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
