"""Is a VM idle? A pure rule over its daily history, so the same answer comes out on the
agent, in a test and in `dockyard-agent vm explain`.

A VM is idle only when every chosen signal stayed under the policy's threshold on every day
of the first period, and each of those days had enough samples to say so. A day with too
few samples is *unknown*, never idle: a collector that stopped must not shut anything down.
Activity anywhere in the window wins over missing days (one busy day is enough to know).
An open interactive session or a busy GPU, on the days they were visible, keeps the VM
active whatever the other signals say. Heartbeat is shown, never counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...protocol.vm import (
    MAX_IDLENESS_DAYS,
    THRESHOLD_SIGNALS,
    IdleState,
    Signal,
    VmLifecyclePolicy,
)
from .store import DAY_S, day_start

GPU_BUSY_PERCENT = 5.0
UNITS = {Signal.CPU: "%", Signal.DISK: " KB/s", Signal.NET: " KB/s", Signal.APPS: " processes"}

History = dict[int, dict[Signal, tuple[float, int]]]
"""Per day: each signal's (figure, number of samples); the figure is the day's peak, or the
percentile the policy names for that signal (`with_statistics`)."""


def with_statistics(history: History, quantiles: dict[int, dict[Signal, float]]) -> History:
    """The history with each day's peak replaced by the policy's percentile where one was
    kept (a day sampled before percentiles were kept keeps its peak)."""
    out: History = {}
    for day, signals in history.items():
        figures = quantiles.get(day, {})
        out[day] = {
            s: (min(peak, figures[s]) if s in figures else peak, n)
            for s, (peak, n) in signals.items()
        }
    return out


def judged_days(history: History, first: int, last: int) -> list[dict[str, object]]:
    """The days of the window that have samples, oldest first, with each threshold signal's
    figure: what an inventory record carries so the catalog can chart why (the latest
    `MAX_IDLENESS_DAYS` of them; the whole history stays here)."""
    days = [d for d in range(first, last + 1) if history.get(d)][-MAX_IDLENESS_DAYS:]
    return [
        {
            "day": day_start(d).isoformat(),
            "figures": {
                s.value: round(v, 3) for s, (v, _) in history[d].items() if s in THRESHOLD_SIGNALS
            },
        }
        for d in days
    ]


@dataclass
class Evaluation:
    state: IdleState
    first_day: int
    last_day: int
    signals: list[Signal]
    reasons: list[str] = field(default_factory=list)
    missing_days: int = 0
    last_active_day: int | None = None


def window(policy: VmLifecyclePolicy, today: int, quiet_from_day: int | None) -> tuple[int, int]:
    """The whole days the first period covers, ending yesterday (today is not over)."""
    first = today - policy.idle_days
    if quiet_from_day is not None:
        first = max(first, quiet_from_day)
    return first, today - 1


def evaluate(
    policy: VmLifecyclePolicy,
    readable: frozenset[Signal],
    history: History,
    today: int,
    quiet_from_day: int | None = None,
) -> Evaluation:
    chosen = [s for s in policy.signals if s in THRESHOLD_SIGNALS]
    first, last = window(policy, today, quiet_from_day)
    result = Evaluation(IdleState.UNKNOWN, first, last, chosen)
    expected = max(1, DAY_S // policy.sample_interval_s)
    needed = max(1, int(expected * policy.min_coverage + 0.999999))
    thresholds = policy.thresholds

    unreadable = [s for s in chosen if s not in readable]
    if unreadable:
        names = ", ".join(s.value for s in unreadable)
        result.reasons.append(f"this hypervisor cannot report {names}: idleness stays unknown")

    active: list[str] = []
    missing: list[int] = []
    for day in range(first, last + 1):
        seen = history.get(day, {})
        day_missing = False
        for signal in chosen:
            peak, count = seen.get(signal, (0.0, 0))
            if count < needed:
                day_missing = True
                continue
            limit = float(getattr(thresholds, signal.value))
            if peak >= limit:
                active.append(
                    f"{signal.value} {policy.statistic(signal).value} reached {peak:.4g}"
                    f"{UNITS[signal]} on day {_date(day)} (threshold {limit:g})"
                )
                result.last_active_day = day
        sessions = seen.get(Signal.SESSIONS)
        if sessions is not None and sessions[1] > 0 and sessions[0] > 0:
            active.append(f"{int(sessions[0])} interactive session(s) open on {_date(day)}")
            result.last_active_day = day
        gpu = seen.get(Signal.GPU)
        if gpu is not None and gpu[1] > 0 and gpu[0] >= GPU_BUSY_PERCENT:
            active.append(f"GPU at {gpu[0]:.4g}% on {_date(day)}")
            result.last_active_day = day
        if day_missing:
            missing.append(day)
    result.missing_days = len(missing)
    span = f"{_date(first)} to {_date(last)}"
    if last < first:
        result.reasons.append("the first period has not begun: no whole day to judge yet")
        return result
    if active:
        result.state = IdleState.ACTIVE
        result.reasons.append(f"active in {span}: " + "; ".join(_summary(active)))
        return result
    if unreadable or missing:
        if missing:
            result.reasons.append(
                f"{len(missing)} of {last - first + 1} days lack enough samples "
                f"(need {needed} of {expected} a day): {_ranges(missing)}"
            )
        return result
    if last - first + 1 < policy.idle_days:
        result.reasons.append(
            f"quiet for {last - first + 1} days since {_date(first)}; the period is "
            f"{policy.idle_days} days"
        )
        return result
    result.state = IdleState.IDLE
    limits = ", ".join(
        f"{s.value} {policy.statistic(s).value} < {float(getattr(thresholds, s.value)):g}{UNITS[s]}"
        for s in chosen
    )
    result.reasons.append(f"every day {span} stayed under the thresholds ({limits})")
    return result


def _date(day: int) -> str:
    return day_start(day).date().isoformat()


def _summary(items: list[str], keep: int = 3) -> list[str]:
    if len(items) <= keep:
        return items
    return [*items[-keep:], f"and {len(items) - keep} more"]


def _ranges(days: list[int]) -> str:
    spans: list[tuple[int, int]] = []
    for day in days:
        if spans and spans[-1][1] == day - 1:
            spans[-1] = (spans[-1][0], day)
        else:
            spans.append((day, day))
    text = ", ".join(_date(a) if a == b else f"{_date(a)}..{_date(b)}" for a, b in spans[:5])
    return text + (f" and {len(spans) - 5} more spans" if len(spans) > 5 else "")


def evaluate_host(
    policy: VmLifecyclePolicy, history: History, today: int, quiet_from_day: int | None = None
) -> Evaluation:
    """A physical host is idle when it ran no powered-on VM on any day of the first period;
    a day without one inventory of it is unknown."""
    first, last = window(policy, today, quiet_from_day)
    result = Evaluation(IdleState.UNKNOWN, first, last, [Signal.VMS])
    busy: list[str] = []
    missing: list[int] = []
    for day in range(first, last + 1):
        peak, count = history.get(day, {}).get(Signal.VMS, (0.0, 0))
        if count < 1:
            missing.append(day)
        elif peak >= 1:
            busy.append(f"ran {int(peak)} VM(s) on {_date(day)}")
            result.last_active_day = day
    result.missing_days = len(missing)
    span = f"{_date(first)} to {_date(last)}"
    if last < first:
        result.reasons.append("the first period has not begun: no whole day to judge yet")
    elif busy:
        result.state = IdleState.ACTIVE
        result.reasons.append(f"active in {span}: " + "; ".join(_summary(busy)))
    elif missing:
        result.reasons.append(
            f"{len(missing)} of {last - first + 1} days without an "
            f"inventory of this host: {_ranges(missing)}"
        )
    elif last - first + 1 < policy.idle_days:
        result.reasons.append(
            f"no VM for {last - first + 1} days; the period is {policy.idle_days} days"
        )
    else:
        result.state = IdleState.IDLE
        result.reasons.append(f"ran no powered-on VM from {span}")
    return result
