"""The VM module's timer: the notice loop (give notices, issue shutdowns when they run out,
close decisions whose command is final). Every replica may run it: each decision is advanced
in its tenant's own transaction with the row locked, so two replicas never mail or command
twice."""

from __future__ import annotations

import logging
from collections import Counter

from sqlalchemy import select

from dockyard.cloud.domain.context import Ctx
from dockyard.cloud.domain.modules import TimerEnv
from dockyard.cloud.domain.principal import Principal
from dockyard.cloud.mail import mailer
from dockyard.cloud.store.models import VmDecision

from . import archive, notices

log = logging.getLogger(__name__)


def run_notices(env: TimerEnv) -> Counter[str]:
    """One pass over every due decision; returns how many ended in each status."""
    send = mailer(env.settings)
    key = notices.link_key(env.settings.signing_secret())
    with env.db.transaction() as session:
        work = notices.open_work(session, env.clock)
    done: Counter[str] = Counter()
    for tenant_id, decision_id in work:
        with env.db.transaction([tenant_id]) as session:
            session.scalar(  # one replica at a time per decision (no-op on SQLite)
                select(VmDecision.id).where(VmDecision.id == decision_id).with_for_update()
            )
            ctx = Ctx(session, Principal.system(frozenset({tenant_id})), env.clock)
            try:
                done[notices.advance(ctx, decision_id, send, key, env.settings.public_url)] += 1
            except Exception:
                log.exception("VM decision %s could not advance", decision_id)
                session.rollback()
                done["error"] += 1
    return done


def run_restore_mail(env: TimerEnv) -> Counter[str]:
    """Mails each ended restore's requester, once: the mark is set in the transaction that
    sends, with the row locked, so a restart or a second replica does not send it again."""
    send = mailer(env.settings)
    done: Counter[str] = Counter()
    if send is None:
        return done  # no mail server: the marks stay unset until one is configured
    with env.db.transaction() as session:
        work = archive.unsent(session)
    for tenant_id, command_id in work:
        with env.db.transaction([tenant_id]) as session:
            try:
                done[
                    "sent" if archive.send_one(session, env.clock, command_id, send) else "skip"
                ] += 1
            except Exception:
                log.exception("the mail for restore %s could not be sent", command_id)
                session.rollback()
                done["error"] += 1
    return done
