"""`--for DURATION`: one process that keeps ticking its jobs on their slots until the time is up.

A job due every 10 s cannot be driven by cron (one tick a minute) or a CronJob without a shell loop that
starts a process per slot. Instead, one invocation started every minute with `--for 55s` pays the start-up
once and then, round after round, ticks its jobs exactly as separate invocations would (due check, jitter,
lock, run, record: jobs.runner), holding each job's lock only while that job runs, and sleeps between
rounds until the earliest next due time among its jobs.

Rules, kept simple:
- a round starts only before the end; a round that starts before it runs to completion (a job's jitter
  wait included), each run under its own `timeout`; the loop never sleeps past the end;
- the next look at a job is its report's `next_due_at` (not due, ran, failed: its retry time); a job that
  gives none (locked by another process, paused, refused a duplicate slot) is looked at again after
  RECHECK, or its period if shorter; a disabled job or one with a configuration error is dropped;
- a database that does not answer ends the loop (its retry budget is spent; the next tick tries again);
- SIGTERM/SIGINT: during a run the runner handles it as always (finish or roll back the batch, record
  `interrupted`); while sleeping, waiting for jitter or between jobs the loop ends at once. Either way the
  loop ends with the signal, and the caller exits 143/130.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from . import clock, signals
from .errors import Interrupted, UsageError
from .execution import job_logger
from .outcome import RunReport, RunStatus
from .schedule import format_duration, parse_duration

if TYPE_CHECKING:
    from .config import Config

RECHECK = timedelta(seconds=5)
"""When to look again at a job whose report names no next due time (locked elsewhere, paused)."""
MIN_NAP = 0.05
"""The shortest sleep between rounds, in seconds: a round never follows another in a tight loop."""
LONGEST = timedelta(days=1)


@dataclass
class Ending:
    """How the loop ended: how many rounds ran, and the signal that stopped it, if one did."""

    rounds: int = 0
    signal: int | None = None


def parse_window(text: str) -> timedelta:
    """The `--for` value ("55s", "2m"): longer than zero, at most a day; UsageError (exit 2) otherwise."""
    try:
        window = parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"--for: {exc}") from None
    if window <= timedelta(0) or window > LONGEST:
        raise UsageError(f"--for: must be longer than 0s and at most {format_duration(LONGEST)}, got {text!r}")
    return window


def keep_ticking(config: Config, names: list[str], window: timedelta,
                 tick: Callable[[list[str]], list[RunReport]],
                 on_round: Callable[[list[RunReport]], None]) -> Ending:
    """Call tick(names) round after round for `window`, sleeping until the next due time in between.

    tick runs one round (jobs.runner.run_due, or run_job for one job) and may raise as they do
    (DatabaseUnavailable, ConfigError propagate; Interrupted ends the loop with its signal); on_round
    gets each round's reports as soon as it ends.
    """
    end = time.monotonic() + window.total_seconds()
    ending = Ending()
    live = list(names)
    with signals.graceful_stop() as stop:
        while live and not stop.requested:
            try:
                reports = tick(live)
            except Interrupted as exc:
                ending.signal = exc.signum
                return ending
            ending.rounds += 1
            on_round(reports)
            interrupted = next((r.signal for r in reports if r.status is RunStatus.INTERRUPTED), None)
            if stop.requested or interrupted is not None:
                ending.signal = stop.signum or interrupted
                return ending
            if any(r.temporary and r.run_id is None for r in reports):
                return ending  # the database did not answer: run_due already said so
            live = [r.job for r in reports if r.status is not RunStatus.DISABLED and not r.config_error]
            nap = _until_next(config, reports)
            left = end - time.monotonic()
            if not live or nap >= left:
                break
            if stop.wait(nap):
                job_logger(live[0] if len(live) == 1 else "run-due", None).info(
                    "stopped by signal %d while waiting for the next slot", stop.signum)
                break
        ending.signal = stop.signum
    return ending


def _until_next(config: Config, reports: list[RunReport]) -> float:
    """Seconds until the earliest next look at any job of the round."""
    now = clock.utcnow()
    looks = []
    for report in reports:
        if report.status is RunStatus.DISABLED or report.config_error:
            continue
        if report.next_due_at is not None:
            looks.append((report.next_due_at - now).total_seconds())
            continue
        period = config.job(report.job).schedule.period()
        looks.append(min(RECHECK, period).total_seconds() if period else RECHECK.total_seconds())
    return max(MIN_NAP, min(looks, default=MIN_NAP))
