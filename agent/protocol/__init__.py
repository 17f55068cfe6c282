"""The agent protocol's messages, defined once: the agent speaks them, the cloud imports them.

Every message refuses unknown fields, so a typo or a newer client's field is a clear 400
rather than silently dropped data. Fields that may travel in `config` flow mode are limited
to codes, counts and opaque ids; free text (`detail`) is allowed only from `metadata` up.
In `config` mode codes and count keys come from a closed list each module declares
(vocabulary.py): a pattern alone would admit a file or person name.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

PROTOCOL_VERSION = "1"
VERSION_HEADER = "Dockyard-Protocol"
TIME_HEADER = "Dockyard-Time"
"""The cloud's time (ISO 8601) on every answer of the agent API: the agent measures its
clock's skew from it and judges command deadlines by the TTL it implies."""
BASE_PATH = "/agent/v1"
MAX_POLL_WAIT_S = 25
MAX_BODY_BYTES = 1 << 20  # 1 MiB; metadata batches larger than that must be split
MAX_JSON_DEPTH = 32
"""Arrays and objects nest at most this deep in any JSON body the cloud reads."""
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_MAX_LIFETIME_S = 300

Code = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.\-]{0,63}$")]
"""A machine-readable code: lower case, digits, `_ . -`; never a name or a path."""

Counts = Annotated[dict[Code, Annotated[int, Field(ge=0)]], Field(max_length=64)]
ShortText = Annotated[str, StringConstraints(max_length=2000)]


class FlowMode(enum.StrEnum):
    """What may go up to the cloud, from least to most."""

    CONFIG = "config"
    METADATA = "metadata"
    DATA = "data"

    @property
    def rank(self) -> int:
        return _FLOW_RANK[self]

    def allows(self, needed: FlowMode) -> bool:
        return self.rank >= needed.rank


_FLOW_RANK = {FlowMode.CONFIG: 0, FlowMode.METADATA: 1, FlowMode.DATA: 2}


def narrowest(*modes: FlowMode | None) -> FlowMode:
    """The effective mode: tenant, site and agent ceiling each may only narrow it."""
    present = [m for m in modes if m is not None]
    if not present:
        raise ValueError("at least one flow mode is needed")
    return min(present, key=lambda m: m.rank)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModuleInfo(Message):
    name: Code
    version: Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z.+\-]{1,32}$")]
    standalone_features: Annotated[list[Code], Field(max_length=64)] = []


class HostFacts(Message):
    """What the host says about itself: claims for display and duplicate detection only."""

    hostname: Annotated[str, StringConstraints(max_length=255)] = ""
    machine_id: Annotated[str, StringConstraints(max_length=128)] = ""
    bios_uuid: Annotated[str, StringConstraints(max_length=64)] = ""
    macs: Annotated[
        list[Annotated[str, StringConstraints(max_length=32)]], Field(max_length=64)
    ] = []


class EnrollRequest(Message):
    token: Annotated[str, StringConstraints(min_length=16, max_length=128)]
    public_key: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]{43}$")]
    """The agent's Ed25519 public key, 32 raw bytes in unpadded base64url."""
    host: HostFacts
    modules: Annotated[list[ModuleInfo], Field(max_length=32)] = []
    max_flow: FlowMode = FlowMode.CONFIG
    standalone_summary: Counts = {}
    name: Annotated[str, StringConstraints(max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$")] = ""
    """What the portal calls the agent (`dock --name`); the host's name when empty. Sent only
    when given, so a cloud that predates it still enrols an agent docked without one."""


class EnrollResponse(Message):
    agent_id: uuid.UUID
    tenant_id: uuid.UUID
    site_id: uuid.UUID
    token_url: str
    flow_mode: FlowMode
    possible_duplicate_of: list[uuid.UUID] = []


class RotateKeyRequest(Message):
    public_key: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]{43}$")]


class TokenResponse(Message):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the OAuth token type, no secret
    expires_in: int


class OAuthError(Message):
    """RFC 6749 section 5.2 error body, as the token endpoint answers it."""

    error: str
    error_description: str = ""


class CommandEntry(Message):
    kind: Literal["command"] = "command"
    seq: int
    command_id: uuid.UUID
    job_id: uuid.UUID
    name: Code
    """`module.action`, for example `noop.append`."""
    args: dict[str, Any] = {}
    expires_at: datetime
    timeout_s: int


class PolicyEntry(Message):
    kind: Literal["policy"] = "policy"
    seq: int
    policy_id: uuid.UUID
    policy_kind: Code
    name: str
    version: int
    document: dict[str, Any]
    assigned: bool = True
    """False when the policy no longer applies to this agent."""


Entry = Annotated[CommandEntry | PolicyEntry, Field(discriminator="kind")]


class PollResponse(Message):
    entries: list[Entry] = []
    last_seq: int
    """The newest sequence number the cloud knows for this agent."""
    flow_mode: FlowMode
    features: dict[Code, list[Code]] = {}
    """Per module, the features that docking unlocks now; absent modules get none."""
    tag: str = ""
    """A digest of `flow_mode` and `features`; the agent sends it back with its next poll so
    the cloud answers at once when either changed, and holds the poll otherwise."""


def settings_tag(mode: FlowMode, features: dict[str, list[str]]) -> str:
    import hashlib
    import json

    blob = json.dumps([mode.value, {k: sorted(v) for k, v in sorted(features.items())}])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class AckOutcome(enum.StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class Ack(Message):
    seq: Annotated[int, Field(ge=1)]
    outcome: AckOutcome = AckOutcome.ACCEPTED
    code: Code | None = None
    """In `config` flow mode one of `ConfigResultCode` (see vocabulary.py), else 403."""


class AckRequest(Message):
    acks: Annotated[list[Ack], Field(min_length=1, max_length=1000)]


class AckResponse(Message):
    acked_seq: int


class JobEventKind(enum.StrEnum):
    STARTED = "started"
    PROGRESS = "progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class JobEvent(Message):
    kind: JobEventKind
    at: datetime
    progress: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    code: Code | None = None
    """In `config` flow mode one of the command's module's codes (`ConfigResultCode`)."""
    counts: Counts = {}
    """In `config` flow mode keyed by the module's declared count keys (`ConfigCountKey`)."""
    detail: ShortText | None = None
    """Free text for people; refused in `config` flow mode."""


class JobEventsRequest(Message):
    events: Annotated[list[JobEvent], Field(min_length=1, max_length=500)]


class JobEventsResponse(Message):
    accepted: int
    job_state: Code


ObjectKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-/]{0,400}$")]
"""A key under the tenant's prefix in cloud-managed storage; the cloud adds the prefix."""


class StorageOp(enum.StrEnum):
    GET = "get"
    PUT = "put"
    PUT_NEW = "put_new"
    """Create only if absent (S3's `If-None-Match: *`)."""
    DELETE = "delete"
    HEAD = "head"


class SignItem(Message):
    op: StorageOp
    key: ObjectKey


class SignRequest(Message):
    """Presigned URLs for objects of cloud-managed storage; only in flow mode `data`."""

    items: Annotated[list[SignItem], Field(min_length=1, max_length=100)]


class SignedURL(Message):
    op: StorageOp
    key: ObjectKey
    method: Literal["GET", "PUT", "DELETE", "HEAD"]
    url: str
    headers: dict[str, str] = {}
    expires_at: datetime


class SignResponse(Message):
    urls: list[SignedURL]


class ListRequest(Message):
    prefix: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._\-/]{0,400}$")] = ""
    after: Annotated[str, StringConstraints(max_length=512)] = ""


class StoredObject(Message):
    key: str
    size: int


class ListResponse(Message):
    objects: list[StoredObject]
    truncated: bool = False
    """More keys follow: ask again with `after` set to the last key."""


class MetadataBatch(Message):
    batch_id: uuid.UUID
    module: Code
    kind: Code
    records: Annotated[list[dict[str, Any]], Field(max_length=10_000)]


class MetadataResponse(Message):
    batch_id: uuid.UUID
    duplicate: bool
    """True when this batch id had been received before; nothing was stored again."""


class Problem(Message):
    """Every non-OAuth error the protocol answers: a code to branch on, a sentence to read."""

    error: Code
    message: str


def event_fits_flow(event: JobEvent, mode: FlowMode) -> bool:
    """In `config` mode an event carries only codes, counts and opaque ids."""
    return mode.allows(FlowMode.METADATA) or event.detail is None
