"""The portal's Policies, Jobs, Settings and Audit log pages in a real browser (Debian's
Chromium) against a real cloud on PostgreSQL, signed in through the OpenID provider: a
policy changed through its form (a bad value said at its field, then a new version and the
diff), assigned and unassigned; a job's progress bar moving as the agent reports, without a
reload, and a failed job's reason in words; the dashboard's jobs per day and a figure over
time; a member invited and given another role; an API token created (its secret shown once),
then revoked, and the secret refused after; the audit log filtered. Every page photographed at 1280 and 390 px, axe finding nothing serious."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from dockyard.agent import protocol as p
from dockyard.cloud.domain import commands, history
from dockyard.cloud.domain.clock import ManualClock
from dockyard.cloud.domain.principal import Role
from dockyard.cloud.store.db import Database

from ..factories import make_world, system
from ..integration.test_vault_brokered import docked_link
from ..procs import Cloud
from .browser import Watch, shoot
from .signin import QUINN, invite, new_page, sign_in
from .test_portal_routes import built

pytestmark = pytest.mark.slow
CLEAN: dict[str, list[Any]] = {"desktop": [], "phone": []}


def _issue(pg: Database, tenant_id: uuid.UUID, agent_id: str) -> tuple[int, str]:
    with system(pg, tenant_id) as ctx:
        command = commands.issue(ctx, uuid.UUID(agent_id), "noop.echo", {"text": "hi"})
        return command.seq, str(command.job_id)


def _report(link: Any, job_id: str, *events: p.JobEvent) -> None:
    link.job_events(job_id, list(events))


def test_policies_jobs_settings_and_audit_pages(
    cloud: Cloud, pg: Database, browser: Any, tmp_path: Path
) -> None:
    built()
    world = make_world(pg, flow=p.FlowMode.METADATA, plan="standard")
    link = docked_link(cloud, world, tmp_path, p.FlowMode.METADATA)
    invite(pg, QUINN, (world.tenant_id,), Role.OWNER)
    base = f"/portal/t/{world.tenant_id}"
    shots: dict[str, Any] = {}
    page = new_page(browser)
    sign_in(page, cloud, QUINN, f"{base}/policies")
    watch = Watch()
    watch.attach(page)

    # Policies: none yet, and the page says what to do.
    page.get_by_role("heading", name="No policy yet").wait_for()
    shots["policies-empty"] = shoot(page, "policies-empty")
    page.get_by_label("Name").fill("Greeter")
    page.get_by_label("Kind").fill("noop")
    page.get_by_role("button", name="Create policy").click()
    page.get_by_role("heading", name="Greeter").wait_for()
    assert page.title() == "Policy Greeter · Dockyard"
    interval = page.get_by_label("interval s")
    assert interval.input_value() == "60"  # the kind's default, as the cloud stored it

    # A value the cloud refuses is said at its field; nothing is saved.
    interval.fill("0")
    page.get_by_role("button", name="Save as version 2").click()
    page.get_by_role("alert").filter(has_text="1 value needs mending").wait_for()
    assert interval.get_attribute("aria-invalid") == "true"
    said = page.locator(f"#{interval.get_attribute('aria-describedby')}")
    assert "greater than or equal to 1" in said.inner_text()
    shots["policy-invalid"] = shoot(page, "policy-invalid")

    # A good value makes version 2, and the diff says what changed.
    interval.fill("120")
    page.get_by_label("greeting").fill("good morning")
    page.get_by_role("button", name="Save as version 2").click()
    page.get_by_text("Saved: version 2").wait_for()
    page.get_by_role("button", name="Save as version 3").wait_for()
    diff = page.locator("table", has_text="What changed from version 1 to version 2")
    rows = diff.locator("tbody tr")
    rows.nth(1).wait_for()
    assert rows.all_inner_texts() == [
        'greeting\tchanged\t"hello"\t"good morning"',
        "interval s\tchanged\t60\t120",
    ]

    # Assigned to the whole tenant, then unassigned.
    page.get_by_role("button", name="Assign", exact=True).click()
    unassign = page.get_by_role("button", name="Unassign from The whole tenant")
    unassign.wait_for()
    shots["policy"] = shoot(page, "policy")
    unassign.click()
    page.get_by_text("Not assigned: no agent follows this policy yet.").wait_for()
    page.get_by_role("link", name="Policies").first.click()
    page.locator("tr", has_text="Greeter").get_by_text("2", exact=True).wait_for()

    # Jobs: a job's bar moves as the agent reports, without a reload.
    agent_id = link.agent_id
    assert agent_id is not None
    seq, job_id = _issue(pg, world.tenant_id, agent_id)
    page.get_by_role("link", name="Jobs").click()
    page.get_by_role("link", name="noop.echo").click()
    page.get_by_role("heading", name="Waiting for the agent").wait_for()
    link.poll(after=seq - 1, wait=0)
    link.ack([p.Ack(seq=seq)])
    now = datetime.now(UTC)
    at = [now + timedelta(seconds=s) for s in range(4)]  # the agent's order, one by one
    _report(
        link,
        job_id,
        p.JobEvent(kind=p.JobEventKind.STARTED, at=at[0]),
        p.JobEvent(kind=p.JobEventKind.PROGRESS, at=at[1], progress=0.4, detail="4 of 10"),
    )
    page.get_by_role("heading", name="Running").wait_for()
    bar = page.get_by_role("progressbar", name="Job progress")
    page.wait_for_function("() => document.querySelector('progress')?.value === 40")
    shots["job-running"] = shoot(page, "job-running")
    _report(
        link,
        job_id,
        p.JobEvent(kind=p.JobEventKind.PROGRESS, at=at[2], progress=1.0),
        p.JobEvent(kind=p.JobEventKind.SUCCEEDED, at=at[3], code="ok"),
    )
    page.get_by_role("heading", name="Succeeded").wait_for()
    assert page.get_by_role("heading", name="Edit").count() == 0  # the policy's page is gone
    page.get_by_text("fetched by the agent", exact=False).wait_for()
    assert page.get_by_text("not yet fetched").count() == 0
    assert bar.get_attribute("value") == "100"
    events = page.locator(".events li").evaluate_all(
        "lis => lis.map(li => li.innerText.slice(li.querySelector('time').innerText.length).trim())"
    )
    assert events == [
        "Started",
        "Progress 40 % — 4 of 10",
        "Progress 100 %",
        "Succeeded",
    ]

    # A failed job says why in words.
    seq, failed = _issue(pg, world.tenant_id, agent_id)
    link.poll(after=seq - 1, wait=0)
    link.ack([p.Ack(seq=seq)])
    _report(
        link,
        failed,
        p.JobEvent(kind=p.JobEventKind.STARTED, at=now),
        p.JobEvent(kind=p.JobEventKind.FAILED, at=now, code="requested_failure", detail="asked to"),
    )
    page.goto(cloud.url + f"{base}/jobs/{failed}")
    page.get_by_role("heading", name="Failed").wait_for()
    page.get_by_text("The command asked to fail, and did").wait_for()
    page.get_by_text("The agent said: asked to").wait_for()
    shots["job-failed"] = shoot(page, "job-failed")
    page.get_by_role("link", name="Jobs").first.click()
    page.locator("tbody tr").nth(1).wait_for()
    assert page.locator("tbody tr").first.get_by_text("Failed").count() == 1  # newest first
    shots["jobs"] = shoot(page, "jobs")

    # Settings: the flow modes in words; a member invited and given another role.
    page.get_by_role("link", name="Settings").click()
    page.get_by_role("radio", name="Metadata (now)").wait_for()
    assert page.get_by_role("radio", name="Metadata (now)").is_checked()
    newcomer = f"newcomer-{uuid.uuid4().hex[:6]}@example.com"
    page.get_by_label("E-mail").fill(newcomer)
    page.get_by_label("Role", exact=True).select_option("OPERATOR")
    page.get_by_role("button", name="Invite").click()
    row = page.locator("tr", has_text=newcomer)
    row.get_by_text("Invited, not signed in yet").wait_for()
    role = page.get_by_label(f"Role of {newcomer}")
    assert role.input_value() == "OPERATOR"
    role.select_option("VIEWER")
    page.wait_for_function(
        "e => document.getElementById(e)?.value === 'VIEWER' && !document.getElementById(e).disabled",
        arg=role.get_attribute("id"),
    )

    # An API token: made with an expiry, its secret shown once, then revoked and refused.
    page.get_by_label("Name", exact=True).fill("nightly export")
    page.get_by_label("Expires after").select_option("30")
    page.get_by_role("button", name="Create API token").click()
    secret = page.get_by_label("Secret").input_value()
    assert len(secret) >= 16
    ask = {"query": "{ me { email } }"}
    heard = httpx.post(
        cloud.url + "/graphql", json=ask, headers={"Authorization": f"Bearer {secret}"}
    )
    assert heard.json()["data"]["me"]["email"] == QUINN.email
    token_row = page.locator("tr", has_text="nightly export")
    token_row.get_by_text("Active").wait_for()
    shots["settings"] = shoot(page, "settings")
    token_row.get_by_role("button", name="Revoke nightly export").click()
    page.get_by_role("dialog", name="Revoke nightly export?").get_by_role(
        "button", name="Revoke token"
    ).click()
    token_row.get_by_text("Revoked").wait_for()
    refused = httpx.post(
        cloud.url + "/graphql", json=ask, headers={"Authorization": f"Bearer {secret}"}
    )
    assert refused.status_code == 401

    # The audit log, filtered in the address; a filter matching nothing says so.
    page.get_by_role("link", name="Audit log").click()
    page.get_by_label("Action starts with").fill("policy.")
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url("**/audit?action=policy.")
    # Retried until the filtered answer is on screen: the unfiltered rows stand until it is.
    expect(page.locator("tbody tr td:nth-child(3)")).to_have_text(
        ["policy.unassign", "policy.assign", "policy.version", "policy.create"]
    )
    shots["audit"] = shoot(page, "audit")
    page.get_by_label("Outcome").select_option("refused")
    page.get_by_role("button", name="Apply filters").click()
    page.get_by_role("heading", name="No record matches these filters").wait_for()
    page.get_by_role("button", name="Clear filters").click()
    page.wait_for_url("**/audit")
    page.get_by_text("member.invite").first.wait_for()

    # The dashboard: today's two finished jobs in the chart over time, and the agent online
    # yesterday (the history timer's sample, taken as of then) and today (read live).
    with system(pg, world.tenant_id, clock=ManualClock(now - timedelta(days=1))) as ctx:
        history.record(ctx, world.tenant_id)
    page.get_by_role("link", name="Dashboard").click()
    page.get_by_text("jobs succeeded and 1 failed").wait_for()
    chart = page.get_by_role("figure", name=re.compile("Jobs finished per day"))
    chart.locator(".recharts-bar-rectangle").first.wait_for()
    agents = page.get_by_role("figure", name="Agents online and quiet")
    expect(agents.locator(".sr-only")).to_have_text("Over the last 14 days. Online: 1 throughout.")
    expect(agents.locator(".recharts-line-dot")).to_have_count(2)  # yesterday and today
    storage = page.get_by_role("figure", name="Archive storage")
    expect(storage).to_contain_text("Nothing archived in these days.")
    shots["dashboard"] = shoot(page, "dashboard")

    page.context.close()
    assert {k: v for k, v in shots.items() if v != CLEAN} == {}
    assert watch.errors == []
    assert watch.foreign == []
