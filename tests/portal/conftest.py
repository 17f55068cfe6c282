"""The portal tests' browser (one Debian Chromium per module, see browser.py) and their
cloud: one process for the package, signing in through a real OpenID provider (signin.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ..procs import Cloud
from .browser import ARGS, AXE, CHROMIUM
from .signin import SignInCloud, start


@pytest.fixture(scope="package")
def signin_cloud(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignInCloud]:
    started = start(pg_url, tmp_path_factory.mktemp("portal"))
    yield started
    started.cloud.stop()
    started.idp.stop()


@pytest.fixture(scope="package")
def cloud(signin_cloud: SignInCloud) -> Cloud:
    """The package's cloud (overriding the shared one: the portal's needs sign-in)."""
    return signin_cloud.cloud


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: infra/dev-packages.sh installs Debian's chromium")
    if not AXE.is_file():
        pytest.fail(f"{AXE} is missing: run `make web` (npm ci installs axe-core)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield chromium
        chromium.close()
