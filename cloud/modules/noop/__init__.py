"""The `noop` module's cloud side: the smallest one, to copy. A policy kind whose document
reaches the agent, and the features each plan grants it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from dockyard.cloud.domain.modules import CloudModule


class NoopPolicy(BaseModel):
    """The `noop` module's policy: enough to show a document reaching an agent."""

    model_config = ConfigDict(extra="forbid")
    greeting: str = Field(default="hello", max_length=200)
    interval_s: int = Field(default=60, ge=1, le=86_400)


MODULE = CloudModule(
    name="noop",
    policies={"noop": NoopPolicy},
    plans={
        "free": frozenset({"catalog"}),
        "standard": frozenset({"catalog", "schedules", "reports"}),
        "enterprise": frozenset(
            {"catalog", "schedules", "reports", "archive", "dedup", "encryption"}
        ),
    },
)
