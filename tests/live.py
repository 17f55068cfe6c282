"""A graphql-transport-ws client for the tests, on the `websockets` library's sync client:
what a script subscribing to the cloud would run."""

from __future__ import annotations

import json
from collections import defaultdict, deque
from typing import Any

from websockets.sync.client import ClientConnection, connect

PROTOCOL = "graphql-transport-ws"
WAIT_S = 60.0
"""How long a test waits for a message it expects before it fails (a guard, not a timing)."""


def ws_url(http_url: str) -> str:
    return "ws" + http_url.removeprefix("http") + "/graphql"


def open_socket(
    http_url: str,
    *,
    token: str | None = None,
    cookie: str | None = None,
    origin: str | None = None,
) -> ClientConnection:
    headers: dict[str, str] = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if cookie is not None:
        headers["Cookie"] = cookie
    return connect(
        ws_url(http_url),
        subprotocols=[PROTOCOL],  # type: ignore[list-item]
        additional_headers=headers,
        origin=origin,  # type: ignore[arg-type]
        open_timeout=30,
    )


class Live:
    """One socket, acknowledged; messages sorted by operation id as they arrive. Use it as
    a context manager: the socket is closed when the block ends."""

    def __init__(self, http_url: str, **auth: Any) -> None:
        self.ws = open_socket(http_url, **auth)
        self.queued: dict[str, deque[dict[str, Any]]] = defaultdict(deque)

    def __enter__(self) -> Live:
        self.ws.__enter__()
        self._send({"type": "connection_init", "payload": {}})
        ack = self._recv()
        assert ack["type"] == "connection_ack", ack
        return self

    def __exit__(self, *exc: object) -> None:
        self.ws.close()

    def _send(self, message: dict[str, Any]) -> None:
        self.ws.send(json.dumps(message))

    def _recv(self) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(self.ws.recv(timeout=WAIT_S))
        return message

    def subscribe(self, op_id: str, query: str, **variables: Any) -> None:
        payload = {"query": query, "variables": variables}
        self._send({"id": op_id, "type": "subscribe", "payload": payload})

    def message(self, op_id: str) -> dict[str, Any]:
        """The next message for `op_id` (`next`, `error` or `complete`)."""
        while not self.queued[op_id]:
            message = self._recv()
            if message["type"] == "ping":
                self._send({"type": "pong"})
                continue
            self.queued[message.get("id", "")].append(message)
        return self.queued[op_id].popleft()

    def data(self, op_id: str) -> dict[str, Any]:
        """The next result's data for `op_id`, asserting it is one without errors."""
        message = self.message(op_id)
        assert message["type"] == "next", message
        assert not message["payload"].get("errors"), message
        data: dict[str, Any] = message["payload"]["data"]
        return data
