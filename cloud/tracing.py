"""Traces through OpenTelemetry when an OTLP endpoint is configured; off by default.

An operator who runs a collector sets `DOCKYARD_OTLP_ENDPOINT` (its OTLP/HTTP base URL, say
`http://otel-collector:4318`) and gets a span per HTTP request and WebSocket (the ASGI
middleware) with the SQL statements it ran as children (SQLAlchemy's instrumentation, on the
cloud's one engine). Spans leave in batches from a thread of the SDK's own, so a slow or
absent collector costs a request nothing; the provider is this app's, not the process-wide
default, so two apps in one process (the tests) never mix their spans. Without the setting
nothing here is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from starlette.middleware import Middleware

from dockyard.cloud.settings import Settings

NOT_TRACED = "livez,readyz,metrics,healthz"
"""Probes and scrapes: many a minute, never what an operator traces."""


@dataclass
class Tracing:
    middleware: list[Middleware] = field(default_factory=list)
    shutdown: Callable[[], None] = lambda: None
    """Sends what is still batched; called when the app stops."""


def tracing(settings: Settings, engine: Engine, version: str) -> Tracing:
    if not settings.otlp_endpoint:
        return Tracing()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create(
        {"service.name": settings.otlp_service_name, "service.version": version}
    )
    provider = TracerProvider(resource=resource)
    exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint.rstrip("/") + "/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    sql = SQLAlchemyInstrumentor()
    sql.instrument(engine=engine, tracer_provider=provider)

    def shutdown() -> None:
        # The instrumentor also wraps sqlalchemy's `create_engine` for the whole process;
        # left in place, every engine made after this app stopped would trace into a provider
        # that has shut down (and a second app's instrument() would do nothing).
        sql.uninstrument()
        provider.shutdown()

    options: dict[str, Any] = {"tracer_provider": provider, "excluded_urls": NOT_TRACED}
    return Tracing([Middleware(OpenTelemetryMiddleware, **options)], shutdown)
