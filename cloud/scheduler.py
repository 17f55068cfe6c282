"""The cloud's own timers: the core's (the dashboard's history, agents turning quiet) and
each module's (`CloudModule.timers`), each in a loop of its own at its own period, on every
replica (a timer locks what it advances, or is harmless twice, so replicas may all run it).
A pass that fails is logged and tried again at the next period."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from dockyard.cloud.domain import history, live, modules
from dockyard.cloud.domain.modules import Timer, TimerEnv
from dockyard.cloud.services import Services

log = logging.getLogger(__name__)

CORE = (history.TIMER, live.QUIET_TIMER)


def timers() -> tuple[Timer, ...]:
    return (*CORE, *(t for m in modules.registry() for t in m.timers))


def timer(name: str) -> Timer:
    for t in timers():
        if t.name == name:
            return t
    raise KeyError(f"no timer is named {name!r}")


def run(svc: Services, name: str) -> Mapping[str, int]:
    """One pass of the named timer, now; returns its counts by outcome."""
    return timer(name).run(TimerEnv(svc.db, svc.clock, svc.settings))


async def forever(svc: Services) -> None:
    """Every timer, until cancelled."""
    loops = [_every(svc, t) for t in timers()]
    await asyncio.gather(*loops)


async def _every(svc: Services, t: Timer) -> None:
    env = TimerEnv(svc.db, svc.clock, svc.settings)
    while True:
        await asyncio.sleep(t.every_s(svc.settings))
        try:
            await svc.run_db(t.run, env)
        except Exception:
            log.exception("timer %s failed; will retry", t.name)
