"""Debian's headless Chromium under Playwright for the portal's browser tests: launched from
/usr/bin/chromium with the flags this machine's closed network needs (never a browser that
Playwright downloads), a watch on each page for console errors and for any request that
leaves 127.0.0.1, axe-core served from the portal's own node_modules, and screenshots."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = Path(os.environ.get("DOCKYARD_SCREENSHOTS", ROOT / "build" / "screenshots"))
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDTHS = {"desktop": 1280, "phone": 390}
LOCAL_HOSTS = frozenset({"127.0.0.1"})


@dataclass
class Watch:
    """What a page did that a user would never see but a test must: errors and hosts."""

    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.on("request", self._request)

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} ({message.location.get('url')})")

    def _request(self, request: Any) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("data", "blob", "about"):
            return
        if parts.hostname not in LOCAL_HOSTS:
            self.foreign.append(request.url)


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical findings on the page as it is now. The file is
    evaluated through the DevTools protocol, which the page's CSP does not govern (a
    <script> tag would be inline, and refused by that CSP, rightly)."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE.read_text())
    found: list[dict[str, Any]] = page.evaluate(
        """async () => {
          const r = await axe.run(document, { resultTypes: ["violations"] });
          return r.violations.map(v => ({ id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.slice(0, 5).map(n => n.target.join(" ")) }));
        }"""
    )
    return [v for v in found if v["impact"] in ("serious", "critical")]


def shoot(page: Any, name: str) -> dict[str, list[dict[str, Any]]]:
    """A full-page screenshot at each width, and axe's findings at each."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    findings = {}
    for label, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(150)  # the layout settles after a resize
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
        findings[label] = axe_violations(page)
    page.set_viewport_size({"width": WIDTHS["desktop"], "height": 900})
    return findings
