"""The cloud's /portal/ routes: the built app for every client route, hashed assets cached
for a year, a strict Content-Security-Policy, and a 503 naming `make web` without a build."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from dockyard.cloud.api import portal

from ..procs import Cloud

BUILT = portal.STATIC / "index.html"


def built() -> None:
    if not BUILT.is_file():
        pytest.fail(f"the portal is not built ({BUILT} is missing): run `make web`")


def directives(csp: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in csp.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


def assert_strict(csp: str) -> None:
    d = directives(csp)
    assert d["default-src"] == ["'self'"]
    assert d["script-src"] == ["'self'"]  # no 'unsafe-inline', no 'unsafe-eval', no host
    assert d["frame-ancestors"] == ["'none'"]
    assert d["object-src"] == ["'none'"]
    for name, sources in d.items():
        assert "'unsafe-inline'" not in sources, name
        assert "'unsafe-eval'" not in sources, name
        assert not any(s.startswith(("http:", "https:", "*")) for s in sources), name


def test_every_client_route_answers_the_app_under_a_strict_csp(cloud: Cloud) -> None:
    built()
    pages = [
        httpx.get(cloud.url + path, timeout=10)
        for path in ("/portal/", "/portal/t/x/agents", "/portal/t/x/vms?page=2")
    ]
    for page in pages:
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-cache"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert_strict(page.headers["content-security-policy"])
        assert page.text == pages[0].text
    # Every script is a file of the cloud's own: none inline, none from another host.
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", pages[0].text, re.S)
    assert scripts, "index.html loads no script"
    for attrs, body in scripts:
        assert body.strip() == ""
        (src,) = re.findall(r'src="([^"]+)"', attrs)
        assert src.startswith("/portal/assets/")
    bare = httpx.get(cloud.url + "/portal", timeout=10)
    assert (bare.status_code, bare.headers["location"]) == (308, "/portal/")


def test_hashed_assets_are_cached_for_a_year_and_a_missing_one_is_404(cloud: Cloud) -> None:
    built()
    index = httpx.get(cloud.url + "/portal/", timeout=10).text
    names = re.findall(r'(/portal/assets/[^"]+)"', index)
    assert any(n.endswith(".js") for n in names)
    assert any(n.endswith(".css") for n in names)
    for name in names:
        asset = httpx.get(cloud.url + name, timeout=10)
        assert asset.status_code == 200
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
    for missing in ("/portal/assets/gone-0000.js", "/portal/assets/..%2Findex.html"):
        answer = httpx.get(cloud.url + missing, timeout=10)
        assert answer.status_code == 404
        assert "<script" not in answer.text


def test_without_a_build_the_portal_says_to_run_make_web(tmp_path: Path) -> None:
    app = Starlette(routes=portal.routes(tmp_path / "static"))

    async def ask() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://portal") as client:
            return await client.get("/portal/t/x/agents")

    answer = asyncio.run(ask())
    assert answer.status_code == 503
    assert "make web" in answer.text
    assert_strict(answer.headers["content-security-policy"])
