"""The rows domain reads hand to the transports, by name. A transport reads the attributes
it shows and writes none; it imports them from here, never from the store, so the store's
tables stay the domain's business (the import contract of `cloud.api`)."""

from dockyard.cloud.store.models import (
    Agent,
    ApiToken,
    AuditRecord,
    CatalogVm,
    Command,
    EnrolmentToken,
    Job,
    JobEvent,
    Policy,
    PolicyAssignment,
    PolicyVersion,
    Site,
    Tenant,
    User,
    VmDecision,
    VmSighting,
)

__all__ = [
    "Agent",
    "ApiToken",
    "AuditRecord",
    "CatalogVm",
    "Command",
    "EnrolmentToken",
    "Job",
    "JobEvent",
    "Policy",
    "PolicyAssignment",
    "PolicyVersion",
    "Site",
    "Tenant",
    "User",
    "VmDecision",
    "VmSighting",
]
