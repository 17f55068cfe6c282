"""The docking link: the agent's only connection to a control plane, always dialled out.

HTTPS with verification on (plain http only to loopback); proxies from HTTPS_PROXY and
NO_PROXY, with credentials in the proxy URL; an extra CA bundle for proxies that inspect
TLS. Access tokens come from the client-credentials grant with a key-signed assertion and
are renewed before they lapse.
"""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
import time
import uuid
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ValidationError

from . import keys
from . import protocol as p
from .errors import InsecureURL, LinkRefused, LinkUnavailable

M = TypeVar("M", bound=BaseModel)
USER_AGENT = "dockyard-agent/0.1"


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url.rstrip("/")
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return url.rstrip("/")
    raise InsecureURL(f"{url!r}: the cloud is reached over https (plain http only on loopback)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def retry_after(response: httpx.Response) -> float | None:
    """The seconds a `Retry-After` asks for, in either of its forms (RFC 9110, 10.2.3).

    delay-seconds is taken as it stands. An HTTP-date (IMF-fixdate, or the obsolete RFC 850
    and asctime forms, all parsed by the standard library's `parsedate_to_datetime`) is
    measured against the answer's own `Date`, the server's clock, so the agent's wall clock
    is never compared with the cloud's; only an answer without a `Date` falls back to ours.
    Anything else is ignored: the back-off's own wait stands.
    """
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = _http_date(value)
        sent = _http_date(response.headers["date"]) if "date" in response.headers else None
    except ValueError:
        return None
    return max(0.0, (when - (sent or datetime.now(UTC))).total_seconds())


def _http_date(value: str) -> datetime:
    """An HTTP-date, always UTC (asctime's form names no zone)."""
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"not an HTTP-date: {value!r}") from e
    return when if when.tzinfo else when.replace(tzinfo=UTC)


class Link:
    def __init__(self, url: str, *, ca_bundle: str | None = None, timeout: float = 30.0) -> None:
        self.url = check_url(url)
        verify: ssl.SSLContext | bool = True
        if ca_bundle:
            verify = ssl.create_default_context(cafile=ca_bundle)
        self._http = httpx.Client(
            base_url=self.url + p.BASE_PATH,
            verify=verify,
            trust_env=True,
            timeout=httpx.Timeout(timeout, read=p.MAX_POLL_WAIT_S + timeout),
            headers={p.VERSION_HEADER: p.PROTOCOL_VERSION, "User-Agent": USER_AGENT},
        )
        self._token: str | None = None
        self._token_until = 0.0
        self.cloud_time: tuple[datetime, float] | None = None
        """The `Dockyard-Time` of the last answer, and `time.monotonic()` when it came."""
        self._identity: tuple[str, Ed25519PrivateKey, str] | None = None
        # Signed storage URLs go to the storage itself, never with the agent's token.
        self._blob_http = httpx.Client(
            verify=verify,
            trust_env=True,
            timeout=httpx.Timeout(timeout * 4),
            headers={"User-Agent": USER_AGENT},
        )

    def close(self) -> None:
        self._http.close()
        self._blob_http.close()

    @property
    def agent_id(self) -> str | None:
        """The agent this link speaks for, once authenticated."""
        return self._identity[0] if self._identity else None

    def authenticate_as(self, agent_id: str, key: Ed25519PrivateKey, token_url: str) -> None:
        self._identity = (agent_id, key, token_url)
        self._token = None

    # --- transport -----------------------------------------------------------------------

    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise LinkUnavailable(f"cannot reach {self.url}: {e}") from e
        stamp = response.headers.get(p.TIME_HEADER)
        if stamp:
            with contextlib.suppress(ValueError):  # an odd stamp: the last measurement stands
                self.cloud_time = (datetime.fromisoformat(stamp), time.monotonic())
        if response.status_code in (429, 502, 503, 504) or response.status_code >= 500:
            raise LinkUnavailable(
                f"{self.url} answered {response.status_code}", retry_after(response)
            )
        return response

    @staticmethod
    def _refused(response: httpx.Response) -> LinkRefused:
        try:
            body = response.json()
            error = body.get("error", "error")
            message = body.get("message") or body.get("error_description") or response.text
        except ValueError:
            error, message = "error", response.text[:200]
        return LinkRefused(response.status_code, str(error), str(message))

    @staticmethod
    def _decode(response: httpx.Response, model: type[M]) -> M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as e:
            raise LinkUnavailable(f"the cloud sent an unexpected {model.__name__}: {e}") from e

    def _authed(self, method: str, path: str, model: type[M], **kw: Any) -> M:
        extra = kw.pop("headers", {})
        for attempt in (1, 2):
            headers = extra | {"Authorization": f"Bearer {self._access_token()}"}
            response = self._send(method, path, headers=headers, **kw)
            if response.status_code == 401 and attempt == 1:
                self._token = None  # expired or rotated: fetch a new one once
                continue
            if response.status_code >= 400:
                raise self._refused(response)
            return self._decode(response, model)
        raise AssertionError("unreachable")

    def _post(self, path: str, message: p.Message, model: type[M]) -> M:
        body = message.model_dump_json()
        headers = {"Content-Type": "application/json"}
        return self._authed("POST", path, model, content=body, headers=headers)

    # --- protocol ------------------------------------------------------------------------

    def enroll(self, request: p.EnrollRequest) -> p.EnrollResponse:
        response = self._send(
            "POST",
            "/enroll",
            content=request.model_dump_json(exclude={"name"} if not request.name else None),
            headers={"Content-Type": "application/json"},
        )
        if response.status_code >= 400:
            raise self._refused(response)
        return self._decode(response, p.EnrollResponse)

    def _access_token(self) -> str:
        if self._token is not None and time.monotonic() < self._token_until:
            return self._token
        if self._identity is None:
            raise LinkRefused(401, "unauthenticated", "this link has no agent identity yet")
        agent_id, key, token_url = self._identity
        form = {
            "grant_type": "client_credentials",
            "client_id": agent_id,
            "client_assertion_type": p.ASSERTION_TYPE,
            "client_assertion": keys.assertion(key, agent_id, token_url),
        }
        response = self._send("POST", "/token", data=form)
        if response.status_code >= 400:
            raise self._refused(response)
        token = self._decode(response, p.TokenResponse)
        self._token = token.access_token
        self._token_until = time.monotonic() + max(10.0, token.expires_in - 60)
        return self._token

    def use_key(self, key: Ed25519PrivateKey) -> None:
        """Authenticate from now on with `key` (after a rotation)."""
        if self._identity is None:
            raise LinkRefused(401, "unauthenticated", "this link has no agent identity yet")
        agent_id, _, token_url = self._identity
        self.authenticate_as(agent_id, key, token_url)

    def storage_sign(self, items: list[p.SignItem]) -> p.SignResponse:
        return self._post("/storage/sign", p.SignRequest(items=items), p.SignResponse)

    def storage_list(self, prefix: str, after: str = "") -> p.ListResponse:
        return self._post(
            "/storage/list", p.ListRequest(prefix=prefix, after=after), p.ListResponse
        )

    def transfer(
        self,
        signed: p.SignedURL,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Use a signed URL: straight to the storage, with only the signed headers."""
        check_url(signed.url.split("?", 1)[0])
        try:
            return self._blob_http.request(
                signed.method,
                signed.url,
                content=content,
                headers={**signed.headers, **(headers or {})},
            )
        except httpx.HTTPError as e:
            raise LinkUnavailable(f"cannot reach the storage: {e}") from e

    def accepts(self, key: Ed25519PrivateKey) -> bool:
        """Whether the cloud issues a token for this agent against `key` (a probe; the
        link keeps its own identity)."""
        if self._identity is None:
            raise LinkRefused(401, "unauthenticated", "this link has no agent identity yet")
        saved = self._identity, self._token, self._token_until
        agent_id, _, token_url = self._identity
        self._identity, self._token = (agent_id, key, token_url), None
        try:
            self._access_token()
            return True
        except LinkRefused as e:
            if e.status == 401:
                return False
            raise
        finally:
            self._identity, self._token, self._token_until = saved

    def poll(
        self, after: int, wait: float, tag: str = "", skew_s: int | None = None
    ) -> p.PollResponse:
        """`skew_s`: how far this agent's clock runs ahead of the cloud's, as last measured
        (the cloud stores it for people to see)."""
        params: dict[str, Any] = {"after": after, "wait": wait}
        if tag:
            params["tag"] = tag
        if skew_s is not None:
            params["skew"] = skew_s
        return self._authed("GET", "/poll", p.PollResponse, params=params)

    def ack(self, acks: list[p.Ack]) -> p.AckResponse:
        return self._post("/acks", p.AckRequest(acks=acks), p.AckResponse)

    def job_events(self, job_id: uuid.UUID | str, events: list[p.JobEvent]) -> p.JobEventsResponse:
        return self._post(
            f"/jobs/{job_id}/events", p.JobEventsRequest(events=events), p.JobEventsResponse
        )

    def metadata(self, batch: p.MetadataBatch) -> p.MetadataResponse:
        return self._post("/metadata", batch, p.MetadataResponse)

    def rotate_key(self, public_key: str) -> p.EnrollResponse:
        return self._post("/key", p.RotateKeyRequest(public_key=public_key), p.EnrollResponse)
