"""The context of a subscription's WebSocket: the principal resolved at the edge when it
opened, and how to tell it still holds.

A WebSocket outlives any request, so it holds no transaction: each read is a transaction
of its own (`read`), and a subscription asks `still_signed_in` before it sends anything,
which resolves the socket's credential again exactly as an HTTP request's would be."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from starlette.websockets import WebSocket, WebSocketState

from dockyard.cloud.api.auth import edge
from dockyard.cloud.domain.context import Ctx

from .context import Context

T = TypeVar("T")

log = logging.getLogger(__name__)

SIGNED_OUT = 4401
"""The close code when the socket's token or session no longer holds (graphql-ws's
'Unauthorized')."""


@dataclass
class LiveContext(Context):
    websocket: WebSocket | None = field(default=None, kw_only=True)

    async def read(self, fn: Callable[[Ctx], T]) -> T:
        """`fn` in a short transaction of its own, scoped to the principal's tenants."""
        principal = self.principal
        assert principal is not None
        async with self.limiter:
            return await self.svc.run_db(self.svc.in_tx, principal, fn)

    def close(self) -> None:
        """Nothing to close: no read leaves a session open."""

    async def still_signed_in(self) -> bool:
        """Resolve the socket's bearer token or session cookie again; the principal it
        gives replaces the old one (a changed membership shows at once). False, and the
        socket closed with `SIGNED_OUT`, once it no longer resolves."""
        assert self.websocket is not None
        caller = await edge.authenticate(self.svc, self.websocket, unsafe=False)
        if isinstance(caller, edge.Caller):
            self.principal = caller.principal
            self.loaders.clear()
            return True
        log.info("live: closing a subscription socket", extra={"reason": caller.reason})
        if self.websocket.client_state is WebSocketState.CONNECTED:
            await self.websocket.close(SIGNED_OUT, edge.SESSION_ENDED[:120])
        return False
