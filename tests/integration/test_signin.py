"""Portal sign-in end to end: a real cloud on PostgreSQL (uvicorn on a free port, in this
process so its injected clock can be moved) and a real OpenID provider (npm oidc-provider),
driven by httpx as a browser would be: redirects followed by hand, cookies in a jar."""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

import httpx
import pytest
import uvicorn
from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy import select

from dockyard.cloud.app import create_app
from dockyard.cloud.auth.oidc import OidcClient, SignInRefused
from dockyard.cloud.cli import read_password, set_password
from dockyard.cloud.domain import admin
from dockyard.cloud.domain.clock import ManualClock
from dockyard.cloud.domain.errors import DomainError
from dockyard.cloud.domain.principal import Role
from dockyard.cloud.settings import Settings
from dockyard.cloud.store.db import Database
from dockyard.cloud.store.migrate import upgrade
from dockyard.cloud.store.models import Site, User, UserSession

from ..factories import World, make_world
from ..peers.oidc import Account, OidcProvider
from ..procs import SECRET, free_port

TAG = uuid.uuid4().hex[:8]
ALICE = Account(
    "alice", "alice-password-1", f"sub-alice-{TAG}", f"alice-{TAG}@example.com", "alice"
)
BOB = Account("bob", "bob-password-12", f"sub-bob-{TAG}", f"bob-{TAG}@example.com", "bob")
MALLORY = Account("mallory", "mallory-pass-1", f"sub-mal-{TAG}", f"mal-{TAG}@example.com", "M")
IDLE, ABSOLUTE = timedelta(minutes=10), timedelta(hours=1)
CREATE_SITE = """mutation($t: ID!, $n: String!) { createSite(tenantId: $t, name: $n) {
  __typename ... on Site { id name } } }"""


class Served:
    """An ASGI app under uvicorn on 127.0.0.1, in a thread of this process."""

    def __init__(self, app: Any, port: int) -> None:
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None)
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the cloud did not start"
            assert self.thread.is_alive(), "the cloud exited"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@dataclass
class Portal:
    url: str
    idp: OidcProvider
    clock: ManualClock
    world: World
    db: Database


@contextmanager
def open_portal(
    pg_url: str, pg: Database, tmp: Path, invited: Account, *, conform: bool = False
) -> Iterator[Portal]:
    """A provider knowing `invited` and Mallory, and a cloud where `invited` is invited (a
    users row with a membership, no subject yet) and Mallory is not."""
    port = free_port()
    idp = OidcProvider(
        [f"http://127.0.0.1:{port}/auth/callback"], [invited, MALLORY], conform=conform
    )
    idp.start(tmp / "oidc.log")
    secret_file = tmp / "client-secret"
    secret_file.write_text(idp.client_secret + "\n")
    world = make_world(pg)
    with pg.transaction() as session:
        user = admin.ensure_user(session, ManualClock(), invited.email, invited.name.title())
        admin.ensure_membership(session, ManualClock(), world.tenant_id, user.id, Role.ADMIN)
    clock = ManualClock(datetime.now(UTC))
    settings = Settings(
        database_url=pg_url,
        data_dir=tmp,
        secret_key=SECRET,
        public_url=f"http://127.0.0.1:{port}",
        oidc_issuer=idp.issuer,
        oidc_client_id=idp.client_id,
        oidc_client_secret_file=secret_file,
        session_idle_s=int(IDLE.total_seconds()),
        session_absolute_s=int(ABSOLUTE.total_seconds()),
    )
    app = create_app(settings, clock)
    served = Served(app, port).start()
    try:
        yield Portal(served.url, idp, clock, world, pg)
    finally:
        served.stop()
        app.state.services.db.dispose()
        idp.stop()


@pytest.fixture(scope="module")
def portal(pg_url: str, pg: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    with open_portal(pg_url, pg, tmp_path_factory.mktemp("signin"), ALICE) as opened:
        yield opened


def browser() -> httpx.Client:
    return httpx.Client(follow_redirects=False, timeout=30)


def _location(r: httpx.Response) -> str:
    return urljoin(str(r.url), r.headers["location"])


def _tampered(url: str, **changes: str | None) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    return urlunsplit(parts._replace(query=urlencode(query)))


def sign_in(
    portal: Portal,
    client: httpx.Client,
    account: Account,
    return_to: str = "/",
    tamper: Callable[[str], str] | None = None,
) -> httpx.Response:
    """Through the provider's login form and back; the answer of /auth/callback."""
    r = client.get(f"{portal.url}/auth/login", params={"return_to": return_to})
    assert r.status_code == 303, r.text
    url = _location(r)
    if tamper:
        url = tamper(url)
    r = client.get(url)
    while r.is_redirect and not _location(r).startswith(portal.url):
        r = client.get(_location(r))
    if r.status_code == 200:  # the provider's login form
        assert 'name="password"' in r.text, r.text
        r = client.post(
            str(r.url),
            data={"prompt": "login", "login": account.login, "password": account.password},
        )
        while r.is_redirect and not _location(r).startswith(portal.url):
            r = client.get(_location(r))
    assert r.is_redirect, r.text
    assert _location(r).startswith(f"{portal.url}/auth/callback"), r.text
    return client.get(_location(r))


def gql(portal: Portal, client: httpx.Client, query: str, csrf: str | None, **v: Any) -> Any:
    headers = {"X-CSRF-Token": csrf} if csrf is not None else {}
    return client.post(
        f"{portal.url}/graphql", json={"query": query, "variables": v}, headers=headers
    )


def signed_in(portal: Portal, account: Account = ALICE) -> tuple[httpx.Client, str]:
    client = browser()
    r = sign_in(portal, client, account)
    assert r.status_code == 303, r.text
    return client, client.cookies["dockyard_csrf"]


def _sites(db: Database, tenant_id: uuid.UUID) -> set[str]:
    with db.transaction([tenant_id]) as session:
        return set(session.scalars(select(Site.name).where(Site.tenant_id == tenant_id)))


def test_an_invited_user_signs_in_with_pkce_and_graphql_takes_the_cookie(portal: Portal) -> None:
    client = browser()
    login = client.get(f"{portal.url}/auth/login", params={"return_to": "/agents?state=docked"})
    query = parse_qs(urlsplit(login.headers["location"]).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["code_challenge"][0]
    assert query["nonce"][0]
    assert query["state"][0]
    assert query["scope"] == ["openid email profile"]
    for header, value in (("x-frame-options", "DENY"), ("cache-control", "no-store")):
        assert login.headers[header] == value
    assert "frame-ancestors 'none'" in login.headers["content-security-policy"]

    r = sign_in(portal, client, ALICE, return_to="/agents?state=docked")
    assert (r.status_code, r.headers["location"]) == (303, "/agents?state=docked"), r.text
    cookies = {c.split("=")[0]: c.lower() for c in r.headers.get_list("set-cookie")}
    session_cookie, csrf_cookie = cookies["dockyard_session"], cookies["dockyard_csrf"]
    assert "httponly" in session_cookie
    assert "samesite=lax" in session_cookie
    assert "secure" not in session_cookie, "loopback: no Secure, or no browser would send it"
    assert "httponly" not in csrf_cookie, "the portal's script must read the CSRF token"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]

    me = client.get(f"{portal.url}/auth/me").json()
    assert (me["email"], me["name"]) == (ALICE.email, "Alice")
    assert {(m["tenantId"], m["role"], m["via"]) for m in me["memberships"]} == {
        (str(portal.world.tenant_id), "admin", "direct")
    }
    assert me["memberships"][0]["tenantName"].startswith("Tenant ")
    with portal.db.transaction() as session:
        user = session.scalars(select(User).where(User.email == ALICE.email)).one()
        assert (user.oidc_issuer, user.oidc_subject) == (portal.idp.issuer, ALICE.sub)
        hashes = set(session.scalars(select(UserSession.token_hash)))
    assert client.cookies["dockyard_session"].encode() not in hashes, "only the hash is kept"

    csrf = client.cookies["dockyard_csrf"]
    name = f"cookie-{TAG}"
    answer = gql(portal, client, CREATE_SITE, csrf, t=str(portal.world.tenant_id), n=name)
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["createSite"]["name"] == name
    assert name in _sites(portal.db, portal.world.tenant_id)

    # A second sign-in in the same browser rotates the session: the old cookie is dead.
    old = client.cookies["dockyard_session"]
    assert sign_in(portal, client, ALICE).status_code == 303
    assert client.cookies["dockyard_session"] != old
    replay = browser()
    replay.cookies.set("dockyard_session", old)
    assert replay.get(f"{portal.url}/auth/me").status_code == 401
    assert client.get(f"{portal.url}/auth/me").status_code == 200


def test_a_cookie_post_without_its_csrf_token_is_refused_and_changes_nothing(
    portal: Portal,
) -> None:
    client, csrf = signed_in(portal)
    t = str(portal.world.tenant_id)
    before = _sites(portal.db, portal.world.tenant_id)
    for header in (None, "", "not-the-token", csrf + "x"):
        r = gql(portal, client, CREATE_SITE, header, t=t, n=f"csrf-{secrets.token_hex(4)}")
        assert r.status_code == 403, r.text
        assert "X-CSRF-Token" in r.json()["errors"][0]["message"]
    # The header must match the cookie too: a page that cannot read the cookie cannot guess.
    other = gql(portal, browser(), CREATE_SITE, csrf, t=t, n="x")
    assert other.status_code == 401
    assert _sites(portal.db, portal.world.tenant_id) == before
    # A bearer token needs no CSRF token: no browser attaches it on its own.
    bearer = httpx.post(
        f"{portal.url}/graphql",
        json={"query": CREATE_SITE, "variables": {"t": t, "n": f"bearer-{TAG}"}},
        headers={"Authorization": f"Bearer {portal.world.token}"},
    )
    assert bearer.json()["data"]["createSite"]["name"] == f"bearer-{TAG}"


def test_a_forged_or_expired_cookie_is_401(portal: Portal) -> None:
    query = "{ me { email } }"
    forged = browser()
    forged.cookies.set("dockyard_session", secrets.token_urlsafe(32))
    forged.cookies.set("dockyard_csrf", "x")
    assert gql(portal, forged, query, "x").status_code == 401
    assert forged.get(f"{portal.url}/auth/me").status_code == 401

    idle, idle_csrf = signed_in(portal)
    lasting, lasting_csrf = signed_in(portal)
    moved = timedelta(0)
    try:
        step = IDLE - timedelta(minutes=1)
        portal.clock.advance(step)
        moved += step
        assert (
            gql(portal, lasting, query, lasting_csrf).json()["data"]["me"]["email"] == ALICE.email
        )
        portal.clock.advance(timedelta(minutes=2))  # past idle for one, not the other
        moved += timedelta(minutes=2)
        assert gql(portal, idle, query, idle_csrf).status_code == 401
        assert idle.get(f"{portal.url}/auth/me").status_code == 401
        while moved < ABSOLUTE - step:  # kept busy, up to the absolute lifetime
            assert gql(portal, lasting, query, lasting_csrf).status_code == 200
            portal.clock.advance(step)
            moved += step
        assert gql(portal, lasting, query, lasting_csrf).status_code == 200
        portal.clock.advance(step)
        moved += step
        r = gql(portal, lasting, query, lasting_csrf)
        assert r.status_code == 401
        assert "sign in again" in r.json()["errors"][0]["message"]
    finally:
        portal.clock.advance(-moved)
    assert idle.get(f"{portal.url}/auth/me").status_code == 401, "an expired session stays dead"


def test_sign_out_ends_the_session_on_the_server(portal: Portal) -> None:
    client, csrf = signed_in(portal)
    cookie = client.cookies["dockyard_session"]
    assert client.post(f"{portal.url}/auth/logout").status_code == 403, "CSRF applies here too"
    assert client.get(f"{portal.url}/auth/me").status_code == 200
    r = client.post(f"{portal.url}/auth/logout", headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200
    assert r.json() == {"signedOut": True}
    assert any(c.startswith("dockyard_session=") for c in r.headers.get_list("set-cookie"))
    replay = browser()
    replay.cookies.set("dockyard_session", cookie)
    replay.cookies.set("dockyard_csrf", csrf)
    assert replay.get(f"{portal.url}/auth/me").status_code == 401
    assert gql(portal, replay, "{ me { email } }", csrf).status_code == 401


@pytest.mark.parametrize(
    "return_to", ["//evil.example", "https://evil.example", "/\\evil", "evil", "/\t/evil.example"]
)
def test_a_return_path_off_the_site_is_refused(portal: Portal, return_to: str) -> None:
    r = browser().get(f"{portal.url}/auth/login", params={"return_to": return_to})
    assert r.status_code == 400
    assert "location" not in r.headers
    assert "single /" in r.text
    assert r.headers["x-frame-options"] == "DENY"


def test_an_uninvited_person_is_refused_with_a_page(portal: Portal) -> None:
    client = browser()
    r = sign_in(portal, client, MALLORY)
    assert r.status_code == 403
    assert "has not been invited" in r.text
    assert "text/html" in r.headers["content-type"]
    assert "dockyard_session" not in client.cookies
    with portal.db.transaction() as session:
        assert session.scalars(select(User).where(User.email == MALLORY.email)).first() is None


def test_a_wrong_nonce_a_wrong_state_or_no_pkce_is_refused(portal: Portal) -> None:
    wrong_nonce = sign_in(portal, browser(), ALICE, tamper=lambda u: _tampered(u, nonce="forged"))
    assert wrong_nonce.status_code == 403
    assert "ID token was refused" in wrong_nonce.text
    assert "nonce" in wrong_nonce.text, wrong_nonce.text
    wrong_state = sign_in(portal, browser(), ALICE, tamper=lambda u: _tampered(u, state="forged"))
    assert wrong_state.status_code == 400
    assert "not for the sign-in" in wrong_state.text
    no_pkce = sign_in(
        portal,
        browser(),
        ALICE,
        tamper=lambda u: _tampered(u, code_challenge=None, code_challenge_method=None),
    )
    assert no_pkce.status_code == 403
    assert "refused the sign-in" in no_pkce.text
    assert "requires PKCE" in no_pkce.text, no_pkce.text


def test_a_tampered_id_token_is_refused(portal: Portal) -> None:
    """A token with the provider's key id and good claims, signed by another key; then one
    of the provider's own tokens with a claim changed after signing."""
    import asyncio

    client = OidcClient(
        portal.idp.issuer, portal.idp.client_id, "unused", f"{portal.url}/cb", portal.clock
    )
    now = int(portal.clock.now().timestamp())
    claims = {
        "iss": portal.idp.issuer,
        "aud": portal.idp.client_id,
        "sub": ALICE.sub,
        "email": ALICE.email,
        "email_verified": True,
        "nonce": "n",
        "iat": now,
        "exp": now + 300,
    }
    forged = jwt.encode({"alg": "RS256", "kid": "test-rs256"}, claims, RSAKey.generate_key(2048))
    with pytest.raises(SignInRefused, match="ID token was refused"):
        asyncio.run(client.validate(forged, "n"))
    header, payload, signature = forged.split(".")
    with pytest.raises(SignInRefused, match="ID token was refused"):
        asyncio.run(client.validate(f"{header}.{payload[:-2]}AA.{signature}", "n"))


def test_passwords_are_for_the_embedded_default_only(portal: Portal, tmp_path: Path) -> None:
    r = httpx.post(f"{portal.url}/auth/password", json={"email": ALICE.email, "password": "x"})
    assert r.status_code == 404
    assert "embedded default" in r.json()["error"]
    assert httpx.get(f"{portal.url}/auth/config").json() == {"oidc": True, "password": False}

    on_pg = Settings(database_url=portal.db.url, data_dir=tmp_path)
    with pytest.raises(DomainError, match="only for the embedded default"):
        read_password(on_pg, tmp_path / "unread")

    settings = Settings(data_dir=tmp_path, public_url=f"http://127.0.0.1:{free_port()}")
    db = Database(settings.resolved_database_url())
    upgrade(db.engine)
    with db.transaction() as session:
        admin.ensure_user(session, ManualClock(), "pat@example.com", "Pat")
    db.dispose()
    password_file = tmp_path / "password"
    password_file.write_text("too short\n")
    with pytest.raises(DomainError, match="at least 12"):
        read_password(settings, password_file)
    password_file.write_text("correct horse battery\n")
    assert (
        set_password(settings, "pat@example.com", read_password(settings, password_file)) == "set"
    )
    assert set_password(settings, "pat@example.com", "another password entirely") == "kept"

    clock = ManualClock(datetime.now(UTC))
    app = create_app(settings, clock)
    served = Served(app, int(settings.public_url.rsplit(":", 1)[1])).start()
    try:
        client = browser()
        url = f"{served.url}/auth/password"
        assert client.get(f"{served.url}/auth/config").json() == {"oidc": False, "password": True}
        for email, password in (("pat@example.com", "wrong"), ("nobody@example.com", "x")):
            r = client.post(url, json={"email": email, "password": password})
            assert r.status_code == 401
            assert r.json() == {"error": "wrong e-mail or password"}
        assert client.post(url, content=b"email=pat").status_code == 415
        r = client.post(url, json={"email": "PAT@example.com", "password": "correct horse battery"})
        assert r.status_code == 200, r.text
        assert client.get(f"{served.url}/auth/me").json()["email"] == "pat@example.com"
        assert client.get(f"{served.url}/auth/login").status_code == 404
        # Sessions past their absolute lifetime go at the user's next sign-in.
        good = {"email": "pat@example.com", "password": "correct horse battery"}
        assert browser().post(url, json=good).status_code == 200
        assert _session_count(settings, "pat@example.com") == 2
        clock.advance(timedelta(seconds=settings.session_absolute_s + 1))
        assert client.get(f"{served.url}/auth/me").status_code == 401
        assert browser().post(url, json=good).status_code == 200
        assert _session_count(settings, "pat@example.com") == 1
        # Five failures for one e-mail within 15 minutes: the sixth attempt is refused,
        # the right password too, until the first failure leaves the window.
        for _ in range(5):
            wrong = {"email": "Pat@Example.com", "password": "guess"}
            assert browser().post(url, json=wrong).status_code == 401
        r = browser().post(url, json=good)
        assert r.status_code == 429
        assert 0 < int(r.headers["Retry-After"]) <= 15 * 60 + 1
        assert "too many failed sign-ins" in r.json()["error"]
        other = browser().post(url, json={"email": "nobody@example.com", "password": "x"})
        assert other.status_code == 401  # another e-mail is not held up
        clock.advance(timedelta(minutes=15, seconds=1))
        assert browser().post(url, json=good).status_code == 200
    finally:
        served.stop()
        app.state.services.db.dispose()


def _session_count(settings: Settings, email: str) -> int:
    db = Database(settings.resolved_database_url())
    try:
        with db.transaction() as session:
            user = session.scalars(select(User).where(User.email == email)).one()
            return len(
                session.scalars(select(UserSession).where(UserSession.user_id == user.id)).all()
            )
    finally:
        db.dispose()


def test_a_provider_that_keeps_email_out_of_the_id_token_is_asked_at_userinfo(
    pg_url: str, pg: Database, tmp_path: Path
) -> None:
    with open_portal(pg_url, pg, tmp_path, BOB, conform=True) as strict:
        client = browser()
        assert sign_in(strict, client, BOB).status_code == 303
        assert client.get(f"{strict.url}/auth/me").json()["email"] == BOB.email
        assert sign_in(strict, browser(), MALLORY).status_code == 403
