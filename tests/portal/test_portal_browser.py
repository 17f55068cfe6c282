"""The portal in a real browser (Debian's Chromium under Playwright) against a real cloud on
PostgreSQL: it loads with no console error and no request off 127.0.0.1, under the strict
CSP; the sign-in page offers the cloud's identity provider; axe-core finds no serious or
critical issue; every page is photographed at 1280 px and 390 px into build/screenshots/
(DOCKYARD_SCREENSHOTS).

The signed-in pages are reached by signing in for real (signin.py): the portal's button, the
OpenID provider's login form, and back with the cloud's HttpOnly session cookie, on which
every GraphQL POST then goes with the CSRF header. Nothing is stood in for."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from dockyard.cloud.domain.principal import Role
from dockyard.cloud.store.db import Database

from ..procs import Cloud
from ..vm.test_cloud_archive import vm
from .browser import Watch, shoot
from .signin import CSRF_COOKIE, PAT, SESSION_COOKIE, cookies, invite, new_page, sign_in
from .test_portal_routes import assert_strict, built
from .worlds import BUSY, stocked

pytestmark = pytest.mark.slow


def test_sign_in_page_loads_offline_clean_and_accessible(cloud: Cloud, browser: Any) -> None:
    built()
    config = httpx.get(cloud.url + "/auth/config", timeout=10)
    assert config.json() == {"oidc": True, "password": False}
    page = new_page(browser)
    context = page.context
    watch = Watch()
    watch.attach(page)
    answer = page.goto(cloud.url + "/portal/")
    assert answer is not None
    assert answer.status == 200
    assert_strict(answer.headers["content-security-policy"])
    page.get_by_role("heading", name="Sign in to Dockyard").wait_for()
    assert page.title() == "Sign in · Dockyard"
    link = page.get_by_role("link", name=re.compile("identity provider"))
    assert link.get_attribute("href") == "/auth/login?return_to=%2Fportal%2F"
    assert page.get_by_label("Password").count() == 0
    findings = shoot(page, "sign-in")
    # Keyboard: the first Tab reaches something on the page, and it shows it has focus.
    page.keyboard.press("Tab")
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", ""), "the focused element shows no outline"
    context.close()
    assert findings == {"desktop": [], "phone": []}
    # Chromium logs every 4xx as a console error; a signed-out /auth/me (401) is an answer
    # the page expects.
    expected = re.compile(
        r"console: Failed to load resource: the server responded with a status of 401 "
        rf"\(Unauthorized\) \({re.escape(cloud.url)}/auth/me\)"
    )
    assert [e for e in watch.errors if not expected.fullmatch(e)] == []
    assert watch.foreign == []


def test_agents_and_vms_pages(cloud: Cloud, pg: Database, browser: Any, tmp_path: Path) -> None:
    built()
    # Enough for a second page of 25, all after web-01 and old-db by name.
    world = stocked(cloud, pg, tmp_path, *(vm(f"z-bulk-{i:02}", "off") for i in range(30)))
    invite(pg, PAT, (world.tenant_id, world.msp_id), Role.OWNER)
    watch = Watch()
    page = new_page(browser)
    context = page.context
    posts: list[dict[str, str]] = []
    page.on(
        "request",
        lambda r: posts.append(r.headers) if r.method == "POST" and "/graphql" in r.url else None,
    )

    # A deep link signs in through the provider and comes back to the page it named.
    sign_in(page, cloud, PAT, f"/portal/t/{world.tenant_id}/agents")
    watch.attach(page)  # from here on: the provider's own pages are not the portal's
    jar = cookies(context, cloud)
    assert jar[SESSION_COOKIE]["httpOnly"]
    assert not jar[CSRF_COOKIE]["httpOnly"], "the portal's script echoes it"
    assert jar[SESSION_COOKIE]["sameSite"] == "Lax"
    page.wait_for_url(f"**/portal/t/{world.tenant_id}/agents")
    page.get_by_role("heading", name="Agents").wait_for()
    assert page.title() == "Agents · Dockyard"
    rows = page.locator("table tbody tr")
    rows.first.wait_for()
    assert rows.count() == 2  # the two docked agents
    assert "noop 1" in rows.first.inner_text() or "noop 1" in rows.nth(1).inner_text()
    switcher = page.get_by_role("combobox", name="Tenant")
    assert switcher.input_value() == str(world.tenant_id)
    # /auth/me lists the customer tenant twice (owner there, and owner of its MSP): the
    # switcher shows it once, naming both.
    options = switcher.locator("option")
    assert options.count() == 2
    assert options.all_inner_texts()[1].endswith("(owner, owner via MSP)")

    page.get_by_role("button", name="Create enrolment token").click()
    command = page.get_by_label("Dock command")
    command.wait_for()
    line = command.input_value()
    assert f"dockyard-agent dock '{cloud.url}' --token-file dockyard-enrol.token" in line
    secret = re.search(r"printf '%s' '([^']+)'", line)
    assert secret is not None
    assert len(secret.group(1)) >= 16
    agents = shoot(page, "agents")

    # Revoking asks first, then the row says so (the agent with no VMs: the other one still
    # takes the restore below).
    spare = page.locator("tr", has_text="noop 1")
    spare.get_by_role("button", name="Revoke h").click()
    dialog = page.get_by_role("dialog", name="Revoke h?")
    dialog.get_by_role("button", name="Revoke agent").click()
    spare.get_by_text("Revoked").wait_for()
    assert spare.get_by_role("button", name="Revoke h").count() == 0

    # VMs: the archived one carries its icon, and its menu opens from the keyboard.
    page.get_by_role("link", name="VMs").click()
    page.get_by_role("heading", name="VMs").wait_for()
    archived = page.locator("tr", has_text="old-db")
    archived.wait_for()
    icon = archived.get_by_role("img", name="Archived")
    assert icon.count() == 1
    assert "8.0 GiB freed on the datastore, 3.0 GiB stored" in (icon.get_attribute("title") or "")
    assert page.locator("tr", has_text="web-01").get_by_role("img", name="Archived").count() == 0
    menu_button = page.get_by_role("button", name="Actions for old-db")
    menu_button.focus()
    page.keyboard.press("Enter")
    item = page.get_by_role("menuitem", name="Restore and restart")
    item.wait_for()
    assert item.evaluate("e => e === document.activeElement")
    assert page.get_by_role("menuitem").count() == 1
    page.keyboard.press("Escape")
    assert menu_button.evaluate("e => e === document.activeElement")
    assert page.get_by_role("menu").count() == 0
    page.keyboard.press("ArrowDown")
    item.wait_for()
    vms = shoot(page, "vms-menu")  # the resize to a phone's width closes the menu

    # "Restore and restart" reaches the real restoreVm: its command is queued.
    menu_button.focus()
    page.keyboard.press("Enter")
    page.keyboard.press("Enter")
    done = page.get_by_role("status").filter(has_text="Restore and restart of old-db")
    done.wait_for()
    assert "is on its way (command " in done.inner_text()

    # A right-click on the running VM's row offers power actions, not a restore.
    page.locator("tr", has_text="web-01").click(button="right")
    labels = page.get_by_role("menuitem").all_inner_texts()
    assert labels == ["Shut down", "Power off", "Suspend"]
    page.keyboard.press("Escape")

    # The VM's page: why the agent judged it active, and the days it judged by.
    page.get_by_role("link", name="web-01").click()
    page.get_by_role("heading", name="web-01").wait_for()
    assert page.title() == "VM web-01 · Dockyard"
    expect(page.get_by_role("list", name="Reasons")).to_have_text(BUSY["reasons"])
    cpu = page.get_by_role("figure", name="CPU per day, against its threshold")
    expect(cpu.locator(".sr-only")).to_contain_text("CPU: 2 of 3 days under the threshold of 5%")
    expect(cpu.locator(".recharts-line-dot")).to_have_count(3)
    expect(cpu.locator(".recharts-reference-line")).to_have_count(1)
    vm_page = shoot(page, "vm")
    page.get_by_role("link", name="VMs", exact=True).first.click()
    page.locator("tr", has_text="old-db").wait_for()

    # Pages of 25 over the connection's cursor: 32 VMs are 25 and 7.
    body = page.locator("table tbody tr")
    assert body.count() == 32
    page.get_by_label("Rows per page").select_option("25")
    page.get_by_text("z-bulk-24").wait_for(state="detached")
    assert body.count() == 25
    page.get_by_role("button", name="Next page").click()
    page.get_by_text("Page 2").wait_for()
    page.get_by_text("z-bulk-29").wait_for()
    assert body.count() == 7
    assert page.get_by_role("button", name="Next page").is_disabled()
    page.get_by_role("button", name="Previous page").click()
    page.locator("tr", has_text="old-db").wait_for()
    assert body.count() == 25

    # Sorting by name within the page: descending puts the page's last name first.
    assert "old-db" in body.first.inner_text()
    page.get_by_role("button", name="Name").click()
    page.get_by_role("button", name="Name").click()
    assert page.locator("th", has_text="Name").get_attribute("aria-sort") == "descending"
    assert "z-bulk-22" in body.first.inner_text()

    # A filter that matches nothing says so, and what to do.
    page.get_by_label("Owner").fill("nobody-at-all")
    page.get_by_role("button", name="Apply filters").click()
    page.get_by_role("heading", name="No VM matches these filters").wait_for()
    empty = shoot(page, "vms-empty-filter")

    # The tenant switcher goes to the other tenant's page; it has no agent, and says what to do.
    page.get_by_role("link", name="Agents").click()
    page.get_by_role("combobox", name="Tenant").select_option(str(world.msp_id))
    page.wait_for_url(f"**/portal/t/{world.msp_id}/agents")
    page.get_by_role("heading", name="No agent has docked yet").wait_for()
    none = shoot(page, "agents-empty")
    # It has no site either: naming one brings the enrolment form.
    page.get_by_label("Site name").fill("Branch office")
    page.get_by_role("button", name="Create site").click()
    page.get_by_role("button", name="Create enrolment token").wait_for()
    assert page.get_by_label("Site").input_value() != ""

    context.close()
    assert posts, "the portal sent no GraphQL POST"
    csrf = jar[CSRF_COOKIE]["value"]
    assert all(h.get("x-csrf-token") == csrf for h in posts), posts
    assert not any("authorization" in h for h in posts), "a bearer token: not the cookie session"
    assert agents == vms == vm_page == empty == none == {"desktop": [], "phone": []}
    assert watch.errors == []
    assert watch.foreign == []
