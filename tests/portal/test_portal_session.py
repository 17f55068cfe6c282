"""The portal's session in a real browser, after a real sign-in through the OpenID provider
(signin.py): signing out from the portal's own button ends the session on the server (the
cookie the browser held, replayed, is refused); a forged session cookie is refused; a POST
from another origin, which the browser sends with the session cookie but cannot give the
CSRF header, is refused and changes nothing; and the portal will not render in a frame
another origin puts it in (`frame-ancestors 'none'`)."""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import Iterator
from html import escape
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from dockyard.cloud.domain.principal import Role
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.models import Site

from ..factories import World, make_world
from ..procs import Cloud
from .other_origin import serving
from .signin import CSRF_COOKIE, SAM, SESSION_COOKIE, TIMEOUT_MS, cookies, invite, sign_in
from .test_portal_routes import built, directives

pytestmark = pytest.mark.slow
ME = "{ me { email } }"
SIGN_IN_HEADING = "Sign in to Dockyard"


@pytest.fixture(scope="module")
def world(pg: Database) -> World:
    world = make_world(pg)
    invite(pg, SAM, (world.tenant_id,), Role.ADMIN)
    return world


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    yield context
    context.close()


def replay(cloud: Cloud, session: str, csrf: str, query: str = ME) -> httpx.Response:
    """A GraphQL POST as a script holding the browser's cookies would send it."""
    return httpx.post(
        cloud.url + "/graphql",
        json={"query": query},
        headers={"X-CSRF-Token": csrf},
        cookies={SESSION_COOKIE: session, CSRF_COOKIE: csrf},
        timeout=10,
    )


def sites(db: Database, tenant_id: uuid.UUID) -> set[str]:
    with db.transaction([tenant_id]) as session:
        return set(session.scalars(select(Site.name).where(Site.tenant_id == tenant_id)))


def test_signing_out_in_the_portal_ends_the_session_on_the_server(
    cloud: Cloud, world: World, context: Any
) -> None:
    built()
    page = context.new_page()
    # Straight to this world's tenant: Sam has a seat in other tests' tenants too, and the
    # portal opens the first of them when no page is asked for.
    sign_in(page, cloud, SAM, f"/portal/t/{world.tenant_id}/agents")
    page.wait_for_url(f"**/portal/t/{world.tenant_id}/agents")
    page.get_by_role("heading", name="Agents").wait_for()
    jar = cookies(context, cloud)
    session, csrf = jar[SESSION_COOKIE]["value"], jar[CSRF_COOKIE]["value"]
    assert jar[SESSION_COOKIE]["httpOnly"]
    assert page.evaluate("() => document.cookie").find(SESSION_COOKIE) < 0, "HttpOnly: unseen"
    alive = replay(cloud, session, csrf)
    assert alive.status_code == 200, alive.text
    assert alive.json()["data"]["me"]["email"] == SAM.email

    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("heading", name=SIGN_IN_HEADING).wait_for()
    assert SESSION_COOKIE not in cookies(context, cloud)
    dead = replay(cloud, session, csrf)
    assert dead.status_code == 401, dead.text
    assert "sign in again" in dead.json()["errors"][0]["message"]
    me = httpx.get(cloud.url + "/auth/me", cookies={SESSION_COOKIE: session}, timeout=10)
    assert me.status_code == 401
    page.reload()
    page.get_by_role("heading", name=SIGN_IN_HEADING).wait_for()


def test_a_forged_session_cookie_is_refused_in_the_browser(cloud: Cloud, context: Any) -> None:
    built()
    forged, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(16)
    context.add_cookies(
        [
            {"name": SESSION_COOKIE, "value": forged, "url": cloud.url, "httpOnly": True},
            {"name": CSRF_COOKIE, "value": csrf, "url": cloud.url},
        ]
    )
    page = context.new_page()
    page.goto(cloud.url + "/portal/")
    page.get_by_role("heading", name=SIGN_IN_HEADING).wait_for()
    answer = page.evaluate(
        """async ([query, csrf]) => {
          const r = await fetch("/graphql", { method: "POST", credentials: "same-origin",
            headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
            body: JSON.stringify({ query }) });
          return { status: r.status, body: await r.json() };
        }""",
        [ME, csrf],
    )
    assert answer["status"] == 401, answer
    assert "sign in again" in answer["body"]["errors"][0]["message"]


def attack_form(cloud: Cloud, tenant_id: uuid.UUID, name: str) -> str:
    """The classic cross-site request: a text/plain form whose one field spells a GraphQL
    mutation as JSON. The browser sends the session cookie with it; no page on another
    origin can read the CSRF cookie, so no X-CSRF-Token header comes with it."""
    mutation = (
        f'mutation {{ createSite(tenantId: "{tenant_id}", name: "{name}") {{ __typename }} }}'
    )
    field = json.dumps({"query": mutation, "pad": ""})[:-2]  # the form adds `=` and the value
    return (
        '<!doctype html><html lang="en"><head><title>Win a prize</title></head><body>'
        f'<form method="post" enctype="text/plain" action="{cloud.url}/graphql">'
        f'<input type="hidden" name="{escape(field)}" value="&quot;}}">'
        '<button type="submit">Claim</button></form></body></html>'
    )


def test_a_post_from_another_origin_without_the_csrf_token_is_refused(
    cloud: Cloud, pg: Database, world: World, context: Any, tmp_path: Path
) -> None:
    built()
    page = context.new_page()
    sign_in(page, cloud, SAM)
    # Signed in with no page asked for, the portal opens on the tenant's dashboard.
    page.wait_for_url(re.compile(r".*/portal/t/[0-9a-f-]+/dashboard$"))
    page.get_by_role("heading", name="Dashboard", exact=True).wait_for()
    assert SESSION_COOKIE in cookies(context, cloud)
    name = f"csrf-{secrets.token_hex(4)}"
    (tmp_path / "attack.html").write_text(attack_form(cloud, world.tenant_id, name))
    before = sites(pg, world.tenant_id)
    with serving(tmp_path) as other:
        page.goto(other + "/attack.html")
        with page.expect_navigation(url=cloud.url + "/graphql") as sent:
            page.get_by_role("button", name="Claim").click()
        answer = sent.value
    assert answer is not None
    request = answer.request
    assert request.method == "POST"
    assert SESSION_COOKIE in (request.header_value("cookie") or ""), "Lax: same site, sent"
    assert request.header_value("x-csrf-token") is None
    assert answer.status == 403, answer.text()
    assert "X-CSRF-Token" in answer.json()["errors"][0]["message"]
    assert sites(pg, world.tenant_id) == before
    # The same mutation from the portal's origin, with the header, does go through (so the
    # form above was refused for the missing token alone).
    jar = cookies(context, cloud)
    body = json.loads((request.post_data or "").rstrip("\r\n"))
    done = replay(cloud, jar[SESSION_COOKIE]["value"], jar[CSRF_COOKIE]["value"], body["query"])
    assert done.json()["data"]["createSite"]["__typename"] == "Site", done.text
    assert sites(pg, world.tenant_id) == before | {name}


def test_another_origin_cannot_frame_the_portal(cloud: Cloud, context: Any, tmp_path: Path) -> None:
    built()
    page_answer = httpx.get(cloud.url + "/portal/", timeout=10)
    assert directives(page_answer.headers["content-security-policy"])["frame-ancestors"] == [
        "'none'"
    ]
    assert page_answer.headers["x-frame-options"] == "DENY"
    (tmp_path / "frame.html").write_text(
        '<!doctype html><html lang="en"><head><title>Framing</title></head><body>'
        f'<iframe title="control" src="{cloud.url}/healthz"></iframe>'
        f'<iframe title="portal" src="{cloud.url}/portal/"></iframe></body></html>'
    )
    page = context.new_page()
    refusals: list[str] = []
    page.on("console", lambda m: refusals.append(m.text) if "frame" in m.text else None)
    with serving(tmp_path) as other:
        with page.expect_console_message(lambda m: "frame-ancestors" in m.text):
            page.goto(other + "/frame.html")
        page.wait_for_load_state("load")
        by_title = {
            f.frame_element().get_attribute("title"): f for f in page.frames if f.parent_frame
        }
    # The control frame (a cloud page that sets no framing rule) loads from the same cloud.
    assert by_title["control"].url == cloud.url + "/healthz"
    assert by_title["control"].locator("body").inner_text().strip() != ""
    # The portal's does not: Chromium puts its error page there instead.
    assert by_title["portal"].url != cloud.url + "/portal/"
    assert by_title["portal"].get_by_role("heading", name=SIGN_IN_HEADING).count() == 0
    assert any("frame-ancestors 'none'" in r for r in refusals), refusals
