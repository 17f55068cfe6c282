"""The cloud's own timers: today, the VM notice loop (give notices, issue shutdowns when
they run out). Every replica may run it: each decision is advanced in its tenant's own
transaction with the row locked, so two replicas never mail or command twice."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from sqlalchemy import select

from dockyard.cloud.domain import vm_notices
from dockyard.cloud.domain.context import Ctx
from dockyard.cloud.domain.principal import Principal
from dockyard.cloud.mail import mailer
from dockyard.cloud.services import Services
from dockyard.cloud.store.models import VmDecision

log = logging.getLogger(__name__)


def run_vm_notices(svc: Services) -> Counter[str]:
    """One pass over every due decision; returns how many ended in each status."""
    send = mailer(svc.settings)
    key = vm_notices.link_key(svc.settings.signing_secret())
    with svc.db.transaction() as session:
        work = vm_notices.open_work(session, svc.clock)
    done: Counter[str] = Counter()
    for tenant_id, decision_id in work:
        with svc.db.transaction([tenant_id]) as session:
            session.scalar(  # one replica at a time per decision (no-op on SQLite)
                select(VmDecision.id).where(VmDecision.id == decision_id).with_for_update()
            )
            ctx = Ctx(session, Principal.system(frozenset({tenant_id})), svc.clock)
            try:
                done[vm_notices.advance(ctx, decision_id, send, key, svc.settings.public_url)] += 1
            except Exception:
                log.exception("VM decision %s could not advance", decision_id)
                session.rollback()
                done["error"] += 1
    return done


async def notices_forever(svc: Services) -> None:
    while True:
        await asyncio.sleep(svc.settings.notice_interval_s)
        try:
            await svc.run_db(run_vm_notices, svc)
        except Exception:
            log.exception("the VM notice loop failed; will retry")
