"""The portal tests' browser: one Debian Chromium per module (see browser.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .browser import ARGS, AXE, CHROMIUM


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
