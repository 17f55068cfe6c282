"""The cloud's one typed settings object, from DOCKYARD_* variables and an optional .env file.

The embedded default needs nothing set: SQLite and blobs under `data_dir`, a signing secret
generated there on first start. Production sets `DOCKYARD_DATABASE_URL` (PostgreSQL),
`DOCKYARD_PUBLIC_URL` (what agents dial; the token audience comes from it, never from a
request's Host header) and `DOCKYARD_SECRET_KEY` (shared by all replicas).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dockyard.agent.protocol import BASE_PATH, MAX_BODY_BYTES, MAX_POLL_WAIT_S


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DOCKYARD_", env_file=".env", extra="ignore")

    data_dir: Path = Path("./.dockyard")
    database_url: str = ""
    blob_dir: Path | None = None
    # Cloud-managed storage in S3 (else the local blob directory): bucket, key prefix,
    # endpoint (for S3-compatible stores) and region; credentials from boto3's usual chain.
    blob_s3_bucket: str = ""
    blob_s3_prefix: str = ""
    blob_s3_endpoint: str | None = None
    blob_s3_region: str = "us-east-1"
    public_url: str = "http://127.0.0.1:8080"
    secret_key: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    access_token_ttl_s: int = Field(default=600, ge=60, le=3600)
    poll_wait_cap_s: int = Field(default=MAX_POLL_WAIT_S, ge=1, le=MAX_POLL_WAIT_S)
    max_body_bytes: int = Field(default=MAX_BODY_BYTES, ge=1024)
    sweep_interval_s: float = Field(default=5.0, gt=0)
    # Full garbage collections run on this timer only (see cloud/collector.py).
    gc_full_interval_s: float = Field(default=600.0, ge=10)
    db_pool_size: int = Field(default=10, ge=1)
    # /metrics reads the fleet's aggregates (jobs, agents, archives) at most this often.
    metrics_fleet_every_s: float = Field(default=15.0, ge=0.1)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # "production" turns off what only helps a developer (GraphQL introspection, unless
    # graphql_introspection says otherwise).
    environment: Literal["development", "production"] = "development"
    graphql_introspection: bool | None = None
    # Readable text by default; "json" writes one JSON object per line (cloud/logs.py).
    log_format: Literal["text", "json"] = "text"
    # Traces through OpenTelemetry to this OTLP/HTTP endpoint (cloud/tracing.py); off when empty.
    otlp_endpoint: str = ""
    otlp_service_name: str = "dockyard-cloud"
    # The SMTP server the cloud sends VM notices through (docked agents with metadata);
    # without a host, proposals are recorded as failed with that reason.
    smtp_host: str = ""
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_sender: str = "dockyard@localhost"
    smtp_starttls: bool = False
    smtp_user: str = ""
    smtp_password: SecretStr | None = None
    notice_interval_s: float = Field(default=30.0, gt=0)
    # How often each tenant's dashboard figures are sampled for its charts over time (a
    # day keeps its last sample; today's point is always read live).
    history_interval_s: float = Field(default=900.0, gt=0)
    # How often the cloud looks for agents that just turned quiet, to tell the portal live.
    quiet_check_interval_s: float = Field(default=15.0, gt=0)
    # Portal sign-in with the company's OpenID provider (off while the issuer is unset): its
    # issuer URL, the client id it gave this cloud, and a file holding that client's secret.
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret_file: Path | None = None
    # A portal session ends after this long without a request, and this long after its
    # sign-in whatever happens; both are read against the cloud's clock.
    session_idle_s: int = Field(default=2 * 3600, ge=60)
    session_absolute_s: int = Field(default=12 * 3600, ge=300)
    # A GraphQL subscription with nothing to send resolves its socket's token or session
    # again this often (before each thing it sends, always); it closes once that fails.
    live_recheck_s: float = Field(default=30.0, gt=0, le=3600)

    @field_validator("oidc_issuer")
    @classmethod
    def _issuer_url(cls, v: str) -> str:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("DOCKYARD_OIDC_ISSUER must start with https:// (http:// on loopback)")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _oidc_complete(self) -> Settings:
        if self.oidc_issuer and not (self.oidc_client_id and self.oidc_client_secret_file):
            raise ValueError(
                "DOCKYARD_OIDC_ISSUER needs DOCKYARD_OIDC_CLIENT_ID and"
                " DOCKYARD_OIDC_CLIENT_SECRET_FILE"
            )
        if self.session_idle_s > self.session_absolute_s:
            raise ValueError("DOCKYARD_SESSION_IDLE_S must not exceed DOCKYARD_SESSION_ABSOLUTE_S")
        return self

    @field_validator("public_url")
    @classmethod
    def _no_trailing_slash(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("DOCKYARD_PUBLIC_URL must start with http:// or https://")
        return v.rstrip("/")

    @property
    def token_url(self) -> str:
        """The token endpoint's public URL: the only audience an agent's assertion may name."""
        return f"{self.public_url}{BASE_PATH}/token"

    @property
    def introspection(self) -> bool:
        """GraphQL introspection (for signed-in users only): on in development, off in
        production unless DOCKYARD_GRAPHQL_INTROSPECTION=true."""
        if self.graphql_introspection is not None:
            return self.graphql_introspection
        return self.environment == "development"

    @property
    def embedded(self) -> bool:
        """The embedded default: no database URL set, so SQLite under `data_dir`. Only
        there may users sign in with a local password (`cloud/auth/passwords.py`)."""
        return not self.database_url

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer)

    def oidc_client_secret(self) -> str:
        if self.oidc_client_secret_file is None:
            raise ValueError("DOCKYARD_OIDC_CLIENT_SECRET_FILE must name the client secret's file")
        try:
            secret = self.oidc_client_secret_file.read_text().strip()
        except OSError as e:
            raise ValueError(f"DOCKYARD_OIDC_CLIENT_SECRET_FILE cannot be read: {e}") from None
        if not secret:
            raise ValueError(
                f"DOCKYARD_OIDC_CLIENT_SECRET_FILE {self.oidc_client_secret_file} is empty"
            )
        return secret

    @property
    def secure_cookies(self) -> bool:
        """Cookies are `Secure` unless the public URL is loopback (a developer's machine,
        where the cloud may serve plain HTTP)."""
        host = urlsplit(self.public_url).hostname or ""
        if host == "localhost":
            return False
        try:
            return not ipaddress.ip_address(host).is_loopback
        except ValueError:
            return True

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'dockyard.db').resolve()}"

    def resolved_blob_dir(self) -> Path:
        return self.blob_dir or self.data_dir / "blobs"

    def signing_secret(self) -> bytes:
        """The HMAC key for access tokens; the embedded default keeps one in `data_dir`."""
        if self.secret_key is not None:
            value = self.secret_key.get_secret_value().encode()
            if len(value) < 32:
                raise ValueError("DOCKYARD_SECRET_KEY must have at least 32 characters")
            return value
        path = self.data_dir / "secret.key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48))
        return path.read_text().strip().encode()
