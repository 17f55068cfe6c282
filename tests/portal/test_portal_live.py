"""The agents page live in a real browser: an agent docked while the page is open appears
without a reload, carried by the portal's GraphQL subscription over the same-origin
WebSocket (which the strict CSP lets through), and the page is the one it was."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from dockyard.cloud.domain.principal import Role
from dockyard.cloud.store.db import Database

from ..factories import enrolment_secret, make_world
from ..procs import Agent, Cloud
from .browser import Watch
from .signin import SAM, invite, new_page, sign_in
from .test_portal_routes import built

pytestmark = pytest.mark.slow


def test_an_agent_docked_while_the_agents_page_is_open_appears_without_a_reload(
    cloud: Cloud, pg: Database, browser: Any, tmp_path: Path
) -> None:
    built()
    world = make_world(pg)
    invite(pg, SAM, (world.tenant_id,), Role.OWNER)
    page = new_page(browser)
    frames: list[dict[str, Any]] = []
    sockets: list[str] = []

    def opened(ws: Any) -> None:
        sockets.append(ws.url)
        ws.on("framereceived", lambda frame: frames.append(json.loads(frame)))

    page.on("websocket", opened)
    sign_in(page, cloud, SAM, f"/portal/t/{world.tenant_id}/agents")
    watch = Watch()
    watch.attach(page)
    page.get_by_role("heading", name="No agent has docked yet").wait_for()
    page.evaluate("() => { window.dockyardSameDocument = true; }")  # gone if it reloads

    def subscribed() -> bool:
        return any(
            f.get("type") == "next"
            and f["payload"]["data"]["tenantChanges"].get("kind") == "RESYNC"
            for f in frames
        )

    _wait(page, subscribed)
    agent = Agent(tmp_path / "agent")
    agent.dock(cloud.url, enrolment_secret(world))
    # The agent names itself after its host.
    page.locator("table tbody tr", has_text=socket.gethostname()).wait_for()
    assert page.evaluate("() => window.dockyardSameDocument === true"), "the page reloaded"
    assert sockets == [cloud.url.replace("http", "ws", 1) + "/graphql"]
    heard = [
        f["payload"]["data"]["tenantChanges"]
        for f in frames
        if f.get("type") == "next" and f["payload"]["data"]["tenantChanges"].get("kind") == "AGENT"
    ]
    assert heard, "the agent came by the subscription"
    assert watch.errors == []
    assert watch.foreign == []
    page.context.close()


def _wait(page: Any, done: Any) -> None:
    """Until `done()`; Playwright's own waits drive the page's events meanwhile."""
    for _ in range(200):
        if done():
            return
        page.wait_for_timeout(100)
    raise AssertionError("the portal never subscribed to the tenant's changes")
