"""GraphQL subscriptions over WebSocket at `/graphql`, graphql-transport-ws only.

What it refuses, it refuses at the upgrade, before the socket is accepted: a page of
another origin (a browser sends the victim's cookies with any page's WebSocket, so an
`Origin` that is neither the public URL's nor the Host's is cross-site WebSocket hijacking,
403); no principal from the Authorization header or the session cookie, resolved by
`auth/edge.py` as for any request (401). A cookie socket needs no CSRF token: the origin
check is what stands in for it. The legacy `graphql-ws` protocol is not offered (it lets a
client subscribe before `connection_init`). Once open, each subscription resolves the
credential again before it sends anything (`live_context.py`)."""

import logging
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http.websocket_origin import normalize_origin
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from dockyard.cloud.api import request_ids
from dockyard.cloud.api.auth import edge
from dockyard.cloud.services import Services

from .context import Context
from .live_context import LiveContext
from .schema import build_schema

log = logging.getLogger(__name__)

CROSS_SITE = "refused: this WebSocket was opened by a page of another origin"
MAX_SUBSCRIPTIONS = 20
"""Per socket: the portal needs two or three."""


def origins(svc: Services, ws: WebSocket) -> set[str]:
    """The origins a page may open a socket from: the cloud's public URL, and the host the
    browser connected to (the same origin, whatever name it used)."""
    allowed = {normalize_origin(svc.settings.public_url)}
    host = ws.headers.get("host")
    if host:
        scheme = "https" if ws.url.scheme == "wss" else "http"
        allowed.add(normalize_origin(f"{scheme}://{host}"))
    return {o for o in allowed if o is not None}


def origin_allowed(svc: Services, ws: WebSocket) -> bool:
    """No Origin: not a browser, so no cookie rode along by itself. Otherwise one of ours."""
    origin = ws.headers.get("origin")
    return origin is None or normalize_origin(origin) in origins(svc, ws)


class LiveGraphQL(GraphQL[Context, None]):
    def __init__(self, svc: Services) -> None:
        super().__init__(
            build_schema(introspection=svc.settings.introspection),
            graphql_ide=None,
            allow_queries_via_get=False,
            subscription_protocols=[GRAPHQL_TRANSPORT_WS_PROTOCOL],
            connection_init_wait_timeout=timedelta(seconds=10),
            max_subscriptions_per_connection=MAX_SUBSCRIPTIONS,
            allowed_origins=[o for o in [normalize_origin(svc.settings.public_url)] if o],
        )
        self.svc = svc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send)
        if not origin_allowed(self.svc, ws):
            self._refused(ws, "a cross-site WebSocket", origin=ws.headers.get("origin", ""))
            await _deny(ws, JSONResponse({"errors": [{"message": CROSS_SITE}]}, 403))
            return
        caller = await edge.authenticate(self.svc, ws, unsafe=False)
        if isinstance(caller, edge.Refusal):
            self._refused(ws, caller.reason)
            body = {"errors": [{"message": caller.message}]}
            await _deny(ws, JSONResponse(body, caller.status, caller.headers))
            return
        ws.state.principal = caller.principal
        await self.run(ws)

    def _refused(self, ws: WebSocket, reason: str, **extra: Any) -> None:
        log.warning(
            "GraphQL WebSocket refused",
            extra={
                "request_id": request_ids.current(),
                "reason": reason,
                "client": ws.client.host if ws.client else "",
                **extra,
            },
        )

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        assert isinstance(request, WebSocket)
        return LiveContext(self.svc, request.state.principal, websocket=request)


async def _deny(ws: WebSocket, response: Response) -> None:
    """The handshake answered with `response` where the server can (uvicorn can), else the
    bare 403 a close before accepting gives."""
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(response)
    else:
        await ws.close(1008)


def live_app(svc: Services) -> Any:
    return LiveGraphQL(svc)
