"""The VM module's HTTP routes: the page a cloud notice's skip and delay links open.

GET shows what the link would do and a button; the answer is taken on POST only, so a mail
scanner or a link preview never spends a single-use link.
"""

from __future__ import annotations

import html
import logging
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from dockyard.agent.protocol import links
from dockyard.cloud.api import bodies
from dockyard.cloud.domain.principal import Principal
from dockyard.cloud.services import Services

from . import notices

MAX_FORM_BYTES = 4096
log = logging.getLogger(__name__)


def _page(status: int, title: str, body: str) -> Response:
    return HTMLResponse(
        f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<h1>{html.escape(title)}</h1>{body}",
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


async def show(request: Request) -> Response:
    token = request.query_params.get("t", "")
    if not token:
        return _page(404, "Not found", "")
    return _page(
        200,
        "Answer this notice",
        f'<form method="post" action="{notices.ANSWER_PATH}">'
        f'<input type="hidden" name="t" value="{html.escape(token)}">'
        '<button type="submit">Confirm</button></form>',
    )


async def take(request: Request) -> Response:
    svc: Services = request.app.state.services
    try:
        body = await bodies.read_limited(request, MAX_FORM_BYTES)
    except bodies.BodyRefused as e:
        return _page(e.status, "This answer cannot be read", f"<p>{html.escape(e.message)}</p>")
    form = parse_qs(body.decode("utf-8", "replace"))  # urlencoded; no multipart here
    token = form.get("t", [""])[0]
    key = notices.link_key(svc.settings.signing_secret())

    def work() -> str:
        with svc.db.transaction() as session:
            tenant, claims = notices.find_for_link(session, key, token, svc.clock)
        principal = Principal.system(frozenset({tenant}))
        try:
            return svc.in_tx(principal, lambda ctx: notices.answer(ctx, claims))
        except links.BadLink as e:
            # The answer's transaction is gone; the refusal is written in one of its own.
            why = str(e)
            svc.in_tx(principal, lambda ctx: notices.refused_link(ctx, tenant, claims, why))
            raise

    try:
        message = await svc.run_db(work)
    except links.BadLink as e:
        log.warning("notice link refused: %s", e)
        return _page(400, "This link cannot be used", f"<p>{html.escape(str(e))}</p>")
    return _page(200, "Thank you", f"<p>{html.escape(message)}</p>")


def routes() -> list[Route]:
    return [
        Route(notices.ANSWER_PATH, show, methods=["GET"]),
        Route(notices.ANSWER_PATH, take, methods=["POST"]),
    ]
