"""HTTP handlers of the agent protocol. Each parses and checks the transport, then calls one
domain function in a worker thread; the held poll waits on the bus with no connection."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from dockyard.agent import protocol as p
from dockyard.agent.protocol import vocabulary
from dockyard.cloud import holding
from dockyard.cloud.domain import (
    agents,
    audit,
    delivery,
    enrolment,
    jobs,
    metadata,
    policies,
    storage,
)
from dockyard.cloud.domain.context import Ctx
from dockyard.cloud.domain.errors import (
    Conflict,
    DomainError,
    FlowModeForbids,
    Forbidden,
    Invalid,
    NotFound,
    Unauthenticated,
)
from dockyard.cloud.domain.principal import Principal
from dockyard.cloud.services import Services

from .. import bodies
from .spec import OPERATIONS, openapi

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[Request], Awaitable[Response]]

_STATUS = {
    NotFound: 404,
    Forbidden: 403,
    FlowModeForbids: 403,
    Invalid: 422,
    Conflict: 409,
    Unauthenticated: 401,
}


class HttpProblem(Exception):
    def __init__(
        self, status: int, error: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.error, self.message, self.headers = status, error, message, headers or {}


def problem(
    status: int, error: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = p.Problem(error=error, message=message).model_dump()
    return JSONResponse(body, status_code=status, headers=headers)


def ok(model: BaseModel, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code=status, media_type="application/json")


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def read_body(request: Request) -> bytes:
    return await bodies.read_limited(request, services(request).settings.max_body_bytes)


async def parse(request: Request, model: type[M]) -> tuple[M, int]:
    body = await read_body(request)
    raw = await bodies.loads(body)
    try:
        return model.model_validate(raw), len(body)
    except ValidationError as e:
        where = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in e.errors()[:10]
        )
        raise HttpProblem(422, "invalid_request", where) from None


def bearer(request: Request) -> tuple[uuid.UUID, uuid.UUID]:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HttpProblem(
            401,
            "unauthenticated",
            "send an access token: Authorization: Bearer ...",
            {"WWW-Authenticate": "Bearer"},
        )
    try:
        return services(request).agent_tokens.verify(token.strip())
    except Unauthenticated as e:
        raise HttpProblem(
            401, "unauthenticated", e.message, {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        ) from None


def guarded(handler: Handler, *, oauth: bool = False) -> Handler:
    """Protocol version check and one mapping of errors to answers for every endpoint; the
    token endpoint answers in RFC 6749's error shape, the others as `Problem`."""

    def fail(
        status: int, error: str, message: str, headers: dict[str, str] | None = None
    ) -> Response:
        if oauth:
            code = "invalid_client" if status == 401 else "invalid_request"
            response = oauth_error(status, code, message)
            response.headers.update(headers or {})
            return response
        return problem(status, error, message, headers)

    async def wrapped(request: Request) -> Response:
        version = request.headers.get(p.VERSION_HEADER)
        if version != p.PROTOCOL_VERSION:
            return fail(
                400,
                "unsupported_protocol_version",
                f"this cloud speaks {p.VERSION_HEADER}: {p.PROTOCOL_VERSION}; "
                f"got {version or 'none'}: upgrade the agent or the cloud",
            )
        try:
            response = await handler(request)
        except HttpProblem as e:
            response = fail(e.status, e.error, e.message, e.headers)
        except bodies.BodyRefused as e:
            response = fail(e.status, e.error, e.message)
        except DomainError as e:
            status = next((s for cls, s in _STATUS.items() if isinstance(e, cls)), 400)
            response = fail(status, e.code, e.message)
        # Stamped as the answer leaves, so a held poll's answer carries the time it ends.
        response.headers[p.TIME_HEADER] = services(request).clock.now().isoformat()
        return response

    return wrapped


async def in_thread(svc: Services, principal: Principal, fn: Callable[[Ctx], Any]) -> Any:
    return await svc.run_db(svc.in_tx, principal, fn)


async def refuse_upload(
    svc: Services,
    principal: Principal,
    tenant_id: uuid.UUID,
    kind: str,
    count: int,
    size: int,
    error: FlowModeForbids,
) -> JSONResponse:
    """Nothing of a refused upload is kept, but the attempt is audited in its own transaction."""

    def _audit(ctx: Ctx) -> None:
        audit.record(
            ctx,
            tenant_id,
            f"upload.{kind}",
            outcome="refused",
            count=count,
            bytes=size,
            reason=error.message,
        )

    await in_thread(svc, principal, _audit)
    return problem(403, error.code, error.message)


# --- endpoints -----------------------------------------------------------------------------


async def enroll(request: Request) -> Response:
    svc = services(request)
    body, _ = await parse(request, p.EnrollRequest)

    def _enroll(ctx: Ctx) -> p.EnrollResponse:
        agent = enrolment.enroll(ctx, body)
        policies.push_all_to_new_agent(ctx, agent)
        return p.EnrollResponse(
            agent_id=agent.id,
            tenant_id=agent.tenant_id,
            site_id=agent.site_id,
            token_url=svc.settings.token_url,
            flow_mode=agents.flow_mode(ctx.session, agent),
            possible_duplicate_of=[uuid.UUID(d) for d in agent.possible_duplicate_of],
        )

    def _run() -> p.EnrollResponse:
        with svc.db.transaction(None) as session:
            return _enroll(Ctx(session, Principal("anonymous", None), svc.clock))

    return ok(await svc.run_db(_run), 201)


def oauth_error(status: int, error: str, description: str) -> JSONResponse:
    body = p.OAuthError(error=error, error_description=description).model_dump()
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


async def token(request: Request) -> Response:
    svc = services(request)
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return oauth_error(
            400, "invalid_request", "send the grant as application/x-www-form-urlencoded"
        )
    try:
        form = dict(
            parse_qsl((await read_body(request)).decode(), strict_parsing=False, max_num_fields=10)
        )
    except (UnicodeDecodeError, ValueError):
        return oauth_error(400, "invalid_request", "the form could not be parsed")
    if form.get("grant_type") != "client_credentials":
        return oauth_error(400, "unsupported_grant_type", "only client_credentials is granted")
    if form.get("client_assertion_type") != p.ASSERTION_TYPE or not form.get("client_assertion"):
        return oauth_error(400, "invalid_request", "a private_key_jwt client assertion is required")
    assertion = form["client_assertion"]
    try:
        claimed = svc.agent_tokens.claimed_agent(assertion)
        if form.get("client_id") not in (None, str(claimed)):
            raise Unauthenticated("client_id and the assertion's subject differ")
        ident = await svc.run_db(_identity, svc, claimed)
        if ident is None or ident.revoked:
            raise Unauthenticated("unknown or revoked agent")
        checked = svc.agent_tokens.verify_assertion(assertion, ident.public_key)
        principal = Principal.agent(ident.agent_id, ident.tenant_id)
        await in_thread(
            svc,
            principal,
            lambda ctx: agents.remember_assertion(
                ctx, ident.agent_id, ident.tenant_id, checked.jti, checked.expires_at
            ),
        )
    except Unauthenticated as e:
        return oauth_error(401, "invalid_client", e.message)
    access = svc.agent_tokens.issue(ident.agent_id, ident.tenant_id)
    body = p.TokenResponse(access_token=access, expires_in=svc.agent_tokens.ttl_s)
    return Response(
        body.model_dump_json(), media_type="application/json", headers={"Cache-Control": "no-store"}
    )


def _identity(svc: Services, agent_id: uuid.UUID) -> agents.AgentIdentity | None:
    with svc.db.session() as session:
        return agents.identity(session, agent_id)


def _query_number(
    request: Request, name: str, default: float | None, cast: Callable[[str], float]
) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        if default is None:
            raise HttpProblem(400, "invalid_request", f"the query parameter {name!r} is required")
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise HttpProblem(400, "invalid_request", f"{name} must be a number") from None
    if value < 0 or value != value:
        raise HttpProblem(400, "invalid_request", f"{name} must be zero or more")
    return value


def come_back() -> JSONResponse:
    """The process is stopping: tell the agent to reconnect shortly (to another replica)."""
    delay = str(random.randint(1, 3))
    return problem(
        503, "shutting_down", "this cloud process is restarting; poll again", {"Retry-After": delay}
    )


LIST_PAGE = 1000
MAX_SKEW_S = 10 * 365 * 86_400
"""An agent's reported clock skew is stored clamped to ten years either way."""


async def poll(request: Request) -> Response:
    svc = services(request)
    agent_id, tenant_id = bearer(request)
    after = int(_query_number(request, "after", None, int))
    if after > 2**62:
        raise HttpProblem(400, "invalid_request", "after is out of range")
    wait = min(_query_number(request, "wait", 0.0, float), float(svc.settings.poll_wait_cap_s))
    known_tag = request.query_params.get("tag", "")
    if svc.bus.closing:
        return come_back()

    def answer_of(view: delivery.PollView) -> p.PollResponse:
        # Built without validation: every field comes typed from the domain (the entries
        # are protocol models already), and validating each of a burst's answers again
        # cost a third of answering it.
        return p.PollResponse.model_construct(
            entries=view.entries,
            last_seq=max(view.last_seq, after),
            flow_mode=view.mode,
            features=view.features,
            tag=view.tag,
        )

    bus = svc.bus
    bus.seen[agent_id] = svc.clock.now()
    skew = request.query_params.get("skew")
    if skew is not None:
        try:
            bus.skews[agent_id] = max(-MAX_SKEW_S, min(MAX_SKEW_S, int(skew)))
        except ValueError:
            raise HttpProblem(400, "invalid_request", "skew is a whole number of seconds") from None

    async def fetch() -> tuple[p.PollResponse, bool]:
        """The database's answer, read in a batch with the other polls reading now."""
        view = await svc.poll_reader.submit(agent_id, tenant_id, after)
        return answer_of(view), not view.more

    arrived = time.monotonic()
    found = await holding.answer(bus, agent_id, after, known_tag, wait, fetch)
    if found is None:
        return come_back()
    if isinstance(found, holding.Quiet):
        return Response(found.body, media_type="application/json")
    if found.entries:
        meter = svc.meter
        meter.delivering.observe(time.monotonic() - arrived)
        for entry in found.entries:
            meter.delivered[entry.kind] += 1
    return ok(found)


async def acks(request: Request) -> Response:
    svc = services(request)
    agent_id, tenant_id = bearer(request)
    body, size = await parse(request, p.AckRequest)
    if not vocabulary.fits(a.code for a in body.acks):
        # Only then is the flow mode read: the common ack, declared or codeless, costs nothing.
        principal = Principal.agent(agent_id, tenant_id)
        try:
            await in_thread(
                svc, principal, lambda ctx: delivery.check_ack_codes(ctx, agent_id, list(body.acks))
            )
        except FlowModeForbids as e:
            return await refuse_upload(svc, principal, tenant_id, "acks", len(body.acks), size, e)
    # Batched with the other agents' acks arriving meanwhile (see cloud/batching.py).
    acked = await svc.ack_writer.submit(agent_id, tenant_id, list(body.acks))
    return ok(p.AckResponse(acked_seq=acked))


async def job_events(request: Request) -> Response:
    svc = services(request)
    agent_id, tenant_id = bearer(request)
    try:
        job_id = uuid.UUID(request.path_params["job_id"])
    except ValueError:
        raise HttpProblem(404, "not_found", "job not found") from None
    body, size = await parse(request, p.JobEventsRequest)
    principal = Principal.agent(agent_id, tenant_id)
    try:
        job = await in_thread(svc, principal, lambda ctx: _report(ctx, agent_id, job_id, body))
    except FlowModeForbids as e:
        return await refuse_upload(
            svc, principal, tenant_id, "job_events", len(body.events), size, e
        )
    return ok(p.JobEventsResponse(accepted=len(body.events), job_state=job))


def _report(ctx: Ctx, agent_id: uuid.UUID, job_id: uuid.UUID, body: p.JobEventsRequest) -> str:
    return jobs.report(ctx, agent_id, job_id, list(body.events)).state


async def upload_metadata(request: Request) -> Response:
    svc = services(request)
    agent_id, tenant_id = bearer(request)
    body, size = await parse(request, p.MetadataBatch)
    principal = Principal.agent(agent_id, tenant_id)
    try:
        accepted = await in_thread(
            svc, principal, lambda ctx: metadata.accept(ctx, agent_id, body, size)
        )
    except FlowModeForbids as e:
        return await refuse_upload(
            svc, principal, tenant_id, "metadata", len(body.records), size, e
        )
    if not accepted.duplicate:
        svc.meter.metadata_bytes[body.module, body.kind] += size
        svc.meter.metadata_records[body.module, body.kind] += len(body.records)
    return ok(p.MetadataResponse(batch_id=accepted.batch_id, duplicate=accepted.duplicate))


async def rotate_key(request: Request) -> Response:
    svc = services(request)
    agent_id, tenant_id = bearer(request)
    body, _ = await parse(request, p.RotateKeyRequest)

    def _rotate(ctx: Ctx) -> p.EnrollResponse:
        agent = agents.rotate_key(ctx, agent_id, body.public_key)
        return p.EnrollResponse(
            agent_id=agent.id,
            tenant_id=agent.tenant_id,
            site_id=agent.site_id,
            token_url=svc.settings.token_url,
            flow_mode=agents.flow_mode(ctx.session, agent),
        )

    return ok(await in_thread(svc, Principal.agent(agent_id, tenant_id), _rotate))


async def storage_sign(request: Request) -> Response:
    svc = services(request)
    agent_id, tenant_id = bearer(request)
    body, size = await parse(request, p.SignRequest)
    principal = Principal.agent(agent_id, tenant_id)
    items = list(body.items)
    try:
        expires = await in_thread(
            svc, principal, lambda ctx: storage.authorize(ctx, agent_id, items)
        )
    except FlowModeForbids as e:
        return await refuse_upload(svc, principal, tenant_id, "data", len(items), size, e)
    urls = []
    for item in items:
        signed = svc.blobs.presign(tenant_id, item.op.value, item.key, expires)
        urls.append(
            p.SignedURL(
                op=item.op,
                key=item.key,
                method=signed.method,
                url=signed.url,
                headers=signed.headers,
                expires_at=datetime.fromtimestamp(expires, UTC),
            )
        )
    return ok(p.SignResponse(urls=urls))


async def storage_list(request: Request) -> Response:
    svc = services(request)
    agent_id, tenant_id = bearer(request)
    body, size = await parse(request, p.ListRequest)
    principal = Principal.agent(agent_id, tenant_id)
    try:
        await in_thread(svc, principal, lambda ctx: storage.authorize(ctx, agent_id, [], "list"))
    except FlowModeForbids as e:
        return await refuse_upload(svc, principal, tenant_id, "data", 0, size, e)
    found, truncated = await svc.run_db(
        svc.blobs.list, tenant_id, body.prefix, body.after, LIST_PAGE
    )
    objects = [p.StoredObject(key=k, size=n) for k, n in found]
    return ok(p.ListResponse(objects=objects, truncated=truncated))


async def openapi_document(request: Request) -> Response:
    return JSONResponse(openapi(services(request).settings.public_url))


_HANDLERS: dict[str, Handler] = {
    "enroll": enroll,
    "token": token,
    "poll": poll,
    "ack": acks,
    "job_events": job_events,
    "metadata": upload_metadata,
    "rotate_key": rotate_key,
    "storage_sign": storage_sign,
    "storage_list": storage_list,
}


def routes() -> list[BaseRoute]:
    table: list[BaseRoute] = [
        Route(
            op.path.replace("{job_id}", "{job_id:str}"),
            guarded(_HANDLERS[op.op_id], oauth=op.form),
            methods=[op.method],
            name=f"agent.{op.op_id}",
        )
        for op in OPERATIONS
    ]
    table.append(Route("/openapi.json", openapi_document, methods=["GET"]))
    return table
