"""The VM module's cloud side: the VM life-cycle policy, the catalog its inventories feed
(`catalog.py`), the notices given for its proposals and the loop that runs them out
(`notices.py`, `timers.py`), the GraphQL of both (`graphql.py`), the page a notice's links
open (`routes.py`), and the features each plan grants it."""

from __future__ import annotations

from dockyard.agent.protocol.vm import POLICY_KIND, VmLifecyclePolicy
from dockyard.cloud.domain.modules import CloudModule, Timer

from . import archive, catalog, dashboard, timers

MODULE = CloudModule(
    name="vm",
    policies={POLICY_KIND: VmLifecyclePolicy},
    policy_checks={POLICY_KIND: archive.check_policy},
    ingest={
        "vm.inventory": catalog.ingest_inventory,
        "vm.decision": catalog.ingest_decisions,
        "vm.audit": catalog.ingest_audit,
    },
    timers=(
        Timer("vm.notices", lambda s: s.notice_interval_s, timers.run_notices),
        Timer("vm.restore_mail", lambda s: s.notice_interval_s, timers.run_restore_mail),
    ),
    plans={
        "free": frozenset({"catalog"}),
        "standard": frozenset({"catalog", "schedules", "reports", "archive"}),
        "enterprise": frozenset(
            {"catalog", "schedules", "reports", "archive", "dedup", "encryption"}
        ),
    },
    fleet=dashboard.fleet,
    figures=dashboard.FIGURES,
    graphql=f"{__name__}.graphql",
    routes=f"{__name__}.routes",
)
