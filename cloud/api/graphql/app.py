"""The ASGI GraphQL endpoint. What it refuses, it refuses before it reads or parses: no
principal, 401 from the Authorization header (or the session cookie) alone; a cookie
request without its CSRF token, 403 (`auth/edge.py`); a body over `limits.MAX_BODY_BYTES`,
413 from its Content-Length or as the stream passes it; JSON nested too deep, 400 before
`json.loads` (`api/bodies.py`). A large body is decoded on a worker thread
(`bodies.loads`), as a large document is parsed on one (`limits.py`). GET serves the
GraphiQL page (`graphiql.py`), whose assets are the cloud's own."""

import logging
from contextvars import ContextVar
from typing import Any

from cross_web import AsyncHTTPRequestAdapter, HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLRequestData
from strawberry.http.parse_content_type import parse_content_type

from dockyard.cloud.api import bodies, request_ids
from dockyard.cloud.api.auth import edge
from dockyard.cloud.services import Services

from . import graphiql, limits
from .context import Context
from .schema import build_schema

log = logging.getLogger(__name__)

# The body `parse_http_body` decoded (off the loop when large), with the bytes it came
# from, for strawberry's synchronous `decode_json` to answer without parsing them again.
_decoded: ContextVar[tuple[bytes, object] | None] = ContextVar("graphql_decoded", default=None)


def _errors(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """GraphQL over HTTP's error shape, for what is refused before any operation runs."""
    return JSONResponse({"data": None, "errors": [{"message": message}]}, status, headers)


class DockyardGraphQL(GraphQL[Context, None]):
    def __init__(self, svc: Services) -> None:
        super().__init__(
            build_schema(introspection=svc.settings.introspection),
            graphql_ide=None,
            allow_queries_via_get=False,
        )
        self.svc = svc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await WebSocket(scope, receive, send).close(1008)  # no subscriptions here
            return
        request = Request(scope, receive)
        response = await self._answer(request, scope, receive)
        await response(scope, receive, send)

    async def _answer(self, request: Request, scope: Scope, receive: Receive) -> Response:
        if request.method == "GET":
            return graphiql.page()
        if request.method != "POST":
            return _errors(405, "GraphQL takes POST; GET shows GraphiQL", {"Allow": "GET, POST"})
        caller = await edge.authenticate(self.svc, request, unsafe=True)
        if isinstance(caller, edge.Refusal):
            log.warning(
                "unauthenticated GraphQL request refused"
                if caller.status == 401
                else "GraphQL request without its CSRF token refused",
                extra={
                    "request_id": request_ids.current(),
                    "reason": caller.reason,
                    "client": request.client.host if request.client else "",
                },
            )
            return _errors(caller.status, caller.message, caller.headers)
        principal = caller.principal
        try:
            bodies.check_declared(request, limits.MAX_BODY_BYTES)
            limited = Request(scope, _limited(receive, limits.MAX_BODY_BYTES))
            limited.state.principal = principal
            return await self.run(limited)
        except bodies.BodyRefused as e:
            return _errors(e.status, e.message)
        except HTTPException as e:
            return _errors(e.status_code, e.reason)

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        return Context(self.svc, request.state.principal)

    async def parse_http_body(
        self, request: AsyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        """The body decoded by `bodies.loads` (on a worker thread past
        `bodies.OFF_LOOP_BYTES`), then read by strawberry as usual: its `decode_json`
        finds the value decoded here. Parsed on the loop, a signed-in user's 256 KB body
        held every other request, `/healthz` included, while it was scanned and decoded."""
        content_type, _ = parse_content_type(request.content_type or "")
        if "application/json" not in content_type:
            return await super().parse_http_body(request)  # its 400 names the content type
        data = await request.get_body()
        try:
            value = await bodies.loads(data)
        except bodies.BodyRefused as e:
            raise HTTPException(e.status, e.message) from None
        if isinstance(value, dict) and isinstance(value.get("query"), str):
            refusal = limits.too_long(value["query"])
            if refusal is not None:
                raise HTTPException(413, refusal)
        token = _decoded.set((data, value))
        try:
            return await super().parse_http_body(request)
        finally:
            _decoded.reset(token)

    def decode_json(self, data: str | bytes) -> object:
        """What `parse_http_body` decoded from these bytes; anything else (which this view
        does not read: GET and multipart are off) is refused."""
        decoded = _decoded.get()
        raw = data.encode() if isinstance(data, str) else data
        if decoded is None or decoded[0] != raw:
            raise HTTPException(400, "the request body is not valid UTF-8 JSON")
        return decoded[1]


def _limited(receive: Receive, limit: int) -> Receive:
    """`receive`, raising `BodyRefused` (413) once the body passes `limit` bytes."""
    size = 0

    async def wrapped() -> Message:
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                raise bodies.too_large(limit)
        return message

    return wrapped


def graphql_app(svc: Services) -> Any:
    return DockyardGraphQL(svc)
