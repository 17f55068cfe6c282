"""The sign-in pieces that need no server: which return paths stay on the site, when cookies
are Secure, the sealed login cookie, scrypt hashes, and the settings that go together."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from dockyard.cloud.api.auth.routes import safe_return_to
from dockyard.cloud.auth.oidc import LoginSealer, LoginState, SignInRefused
from dockyard.cloud.auth.passwords import hash_password, verify_password
from dockyard.cloud.domain.clock import ManualClock
from dockyard.cloud.settings import Settings


@pytest.mark.parametrize(
    "value",
    ["//evil.example", "https://evil.example", "/\\evil", "evil", "/a\nb", "/ x", "http:/x"],
)
def test_a_return_path_that_could_leave_the_site_is_refused(value: str) -> None:
    with pytest.raises(SignInRefused, match="single /"):
        safe_return_to(value)


def test_a_path_on_the_site_is_kept() -> None:
    assert safe_return_to(None) == "/"
    assert safe_return_to("/vms?state=idle#top") == "/vms?state=idle#top"
    assert safe_return_to("/%2F%2Fevil.example") == "/%2F%2Fevil.example"


@pytest.mark.parametrize(
    ("url", "secure"),
    [
        ("http://127.0.0.1:8080", False),
        ("http://localhost:8080", False),
        ("http://[::1]:8080", False),
        ("https://dock.example.com", True),
        ("http://10.0.0.5:8080", True),
    ],
)
def test_cookies_are_secure_unless_the_public_url_is_loopback(url: str, secure: bool) -> None:
    assert Settings(public_url=url).secure_cookies is secure


def test_the_login_cookie_refuses_tampering_and_old_age() -> None:
    clock = ManualClock()
    sealer = LoginSealer(b"k" * 40, clock)
    login = LoginState("s", "n", "v", "/agents", clock.now().timestamp())
    sealed = sealer.seal(login)
    assert sealer.open(sealed) == login
    body, mac = sealed.split(".")
    for forged in (f"{body}x.{mac}", f"{body}.{mac[:-1]}0", "garbage", ""):
        with pytest.raises(SignInRefused, match="not started here"):
            sealer.open(forged)
    with pytest.raises(SignInRefused, match="not started here"):
        LoginSealer(b"other" * 8, clock).open(sealed)
    clock.advance(timedelta(minutes=11))
    with pytest.raises(SignInRefused, match="too long"):
        sealer.open(sealed)


def test_a_password_hash_verifies_only_its_password() -> None:
    stored = hash_password("correct horse battery")
    assert stored.startswith("scrypt$")
    assert "correct" not in stored
    assert verify_password("correct horse battery", stored)
    assert not verify_password("correct horse batterz", stored)
    assert hash_password("correct horse battery") != stored, "salted"
    assert not verify_password("x", "bcrypt$whatever")


def test_oidc_settings_come_together(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="CLIENT_ID"):
        Settings(oidc_issuer="https://login.example.com")
    with pytest.raises(ValidationError, match="must not exceed"):
        Settings(session_idle_s=7200, session_absolute_s=3600)
    missing = Settings(
        oidc_issuer="https://login.example.com/",
        oidc_client_id="c",
        oidc_client_secret_file=tmp_path / "absent",
    )
    assert missing.oidc_issuer == "https://login.example.com"
    with pytest.raises(ValueError, match="cannot be read"):
        missing.oidc_client_secret()
    assert Settings().embedded
    assert not Settings(database_url="postgresql://x/y").embedded
