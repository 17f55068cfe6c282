"""Real sign-in for the portal's browser tests: the OpenID provider peer (tests/peers/oidc.py,
started as tests/integration/test_signin.py starts it), a cloud process configured with its
issuer and client, invitations made the way an owner makes them (a users row with a
membership and no subject yet), and a browser that signs in through the provider's own form.

Nothing about sign-in is stood in for: the session cookie (HttpOnly) and the CSRF cookie
are the ones the cloud's /auth/callback sets."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockyard.cloud.domain import admin
from dockyard.cloud.domain.clock import ManualClock
from dockyard.cloud.domain.principal import Role
from dockyard.cloud.store.db import Database

from ..peers.oidc import Account, OidcProvider
from ..procs import Cloud, free_port

TAG = uuid.uuid4().hex[:8]
SESSION_COOKIE, CSRF_COOKIE = "dockyard_session", "dockyard_csrf"
# A locator that waits longer than this has found a broken page, not a slow one.
TIMEOUT_MS = 10_000


def account(login: str) -> Account:
    return Account(
        login,
        f"{login}-password-1",
        f"sub-{login}-{TAG}",
        f"{login}-{TAG}@example.com",
        login.title(),
    )


# One person per test that signs in, so no test's invitation reaches into another's world.
PAT, SAM, ALICE, BOB, MALLORY, QUINN, RAE = (
    account(n) for n in ("pat", "sam", "alice", "bob", "mallory", "quinn", "rae")
)
ACCOUNTS = [PAT, SAM, ALICE, BOB, MALLORY, QUINN, RAE]


@dataclass
class SignInCloud:
    cloud: Cloud
    idp: OidcProvider


def start(db_url: str, folder: Path) -> SignInCloud:
    """The provider, knowing every account above, and a cloud that signs in with it."""
    port = free_port()
    idp = OidcProvider([f"http://127.0.0.1:{port}/auth/callback"], ACCOUNTS)
    idp.start(folder / "oidc.log")
    secret = folder / "client-secret"
    secret.write_text(idp.client_secret + "\n")
    env = {
        "DOCKYARD_OIDC_ISSUER": idp.issuer,
        "DOCKYARD_OIDC_CLIENT_ID": idp.client_id,
        "DOCKYARD_OIDC_CLIENT_SECRET_FILE": str(secret),
        "DOCKYARD_QUIET_CHECK_INTERVAL_S": "1",  # agents going quiet show within a second
    }
    try:
        cloud = Cloud(db_url, folder / "cloud", port=port, env=env).start()
    except BaseException:
        idp.stop()
        raise
    return SignInCloud(cloud, idp)


def invite(db: Database, person: Account, tenants: Iterable[uuid.UUID], role: Role) -> uuid.UUID:
    """`person` invited by e-mail to each tenant: it binds to its subject at first sign-in."""
    clock = ManualClock()
    with db.transaction() as session:
        user = admin.ensure_user(session, clock, person.email, person.name)
        for tenant_id in tenants:
            admin.ensure_membership(session, clock, tenant_id, user.id, role)
        return user.id


def sign_in(page: Any, cloud: Cloud, person: Account, path: str = "/portal/") -> None:
    """From the portal's sign-in page through the provider's login form, back to `path`."""
    page.goto(cloud.url + path)
    page.get_by_role("link", name="Sign in with your identity provider").click()
    page.locator("input[name=login]").fill(person.login)
    page.locator("input[name=password]").fill(person.password)
    page.locator("button[type=submit]").click()
    page.wait_for_url(cloud.url + "/portal/**")
    page.get_by_role("button", name="Sign out").wait_for()


def cookies(context: Any, cloud: Cloud) -> dict[str, dict[str, Any]]:
    """The browser's cookies for the cloud, by name, with their flags."""
    return {c["name"]: c for c in context.cookies(cloud.url)}


def new_page(browser: Any) -> Any:
    """A page in a fresh context (no cookie yet); close it with `page.context.close()`."""
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    return context.new_page()
