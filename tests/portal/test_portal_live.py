"""The portal live in a real browser: an agent docked, with the token and dock line the
agents page made, while the page is open appears without a reload, carried by the portal's GraphQL subscription over the same-origin
WebSocket (which the strict CSP lets through), and the page is the one it was; an agent
going quiet while the dashboard is open moves from online to quiet the same way."""

from __future__ import annotations

import json
import re
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import update

from dockyard.cloud.domain.dashboard import QUIET_AFTER
from dockyard.cloud.domain.principal import Role
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import Agent as AgentRow

from ..factories import enrol_agent, make_world, system
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
    # The token made here, in the page, and the dock line it shows, run by a real agent.
    page.get_by_role("button", name="Create enrolment token").click()
    line = page.get_by_label("Dock command").input_value()
    secret = re.search(r"printf '%s' '([^']+)'", line)
    assert secret is not None, line
    token_file = tmp_path / "dockyard-enrol.token"
    token_file.write_text(secret.group(1))
    agent = Agent(tmp_path / "agent")
    docked = agent.cli("dock", cloud.url, "--token-file", str(token_file))
    assert docked.returncode == 0, docked.stderr
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


def test_an_agent_going_quiet_while_the_dashboard_is_open_shows_without_a_reload(
    cloud: Cloud, pg: Database, browser: Any, tmp_path: Path
) -> None:
    """Nothing is written when an agent falls silent: the cloud's `agents.quiet` timer tells
    the subscription, and the dashboard reads its figures again. Seen well before the page's
    own 30-second refetch could have brought it."""
    built()
    world = make_world(pg)
    invite(pg, SAM, (world.tenant_id,), Role.OWNER)
    agent_id = enrol_agent(world, tmp_path)
    quiet_at = datetime.now(UTC) + timedelta(seconds=12)
    with system(pg, world.tenant_id) as ctx:
        ctx.session.execute(
            update(AgentRow)
            .where(AgentRow.id == agent_id)
            .values(last_seen_at=quiet_at - QUIET_AFTER)
        )
    page = new_page(browser)
    frames: list[dict[str, Any]] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda f: frames.append(json.loads(f))))
    sign_in(page, cloud, SAM, f"/portal/t/{world.tenant_id}/dashboard")
    watch = Watch()
    watch.attach(page)
    card = page.get_by_role("region", name="Agents")
    figure = {
        what: card.locator(".figure", has_text=what).locator("dd") for what in ("online", "quiet")
    }
    expect(figure["online"]).to_have_text("1")
    expect(figure["quiet"]).to_have_text("0")
    loaded = datetime.now(UTC)
    assert loaded < quiet_at, "the page must open before the agent goes quiet"
    page.evaluate("() => { window.dockyardSameDocument = true; }")
    # Quiet within 8 s of the threshold: the page's own refetch is 30 s after it loaded.
    wait_ms = (quiet_at - datetime.now(UTC) + timedelta(seconds=8)).total_seconds() * 1000
    expect(figure["quiet"]).to_have_text("1", timeout=wait_ms)
    expect(figure["online"]).to_have_text("0")
    assert datetime.now(UTC) < loaded + timedelta(seconds=30)
    assert page.evaluate("() => window.dockyardSameDocument === true"), "the page reloaded"
    heard = [
        f["payload"]["data"]["tenantChanges"]
        for f in frames
        if f.get("type") == "next" and f["payload"]["data"]["tenantChanges"].get("kind") == "AGENT"
    ]
    # Perhaps more than once (the timer's windows overlap so that none is missed).
    assert {h["agent"]["id"] for h in heard} == {str(agent_id)}, "it came by the subscription"
    assert watch.errors == []
    page.context.close()


def _wait(page: Any, done: Any) -> None:
    """Until `done()`; Playwright's own waits drive the page's events meanwhile."""
    for _ in range(200):
        if done():
            return
        page.wait_for_timeout(100)
    raise AssertionError("the portal never subscribed to the tenant's changes")
