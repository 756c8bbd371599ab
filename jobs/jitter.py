"""Per-job `jitter`: a scheduled run waits a random delay in [0, jitter) before it takes the lock.

Many hosts (pods of one deployment, or many deployments against one database server) whose ticks fire on
the same second would otherwise all hit the database in that second. The delay is drawn per slot from
(host, job, the due time the run serves), not from a fresh random number per process:

- every tick of one slot on one host draws the same delay, so a second tick of the slot (cron every minute
  for a five-minute job, a `--for` loop looking again) cannot draw a shorter one and pull the start
  earlier: the spread stays uniform;
- different hosts, jobs and slots draw different delays, so a fleet spreads over the jitter window.

The wait comes after the cheap due check (a not-due tick stays quick and never waits) and before the lock
(no lock is held while waiting); forced runs and --dry-run never wait. A signal ends the wait at once, with
no run recorded.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .due import next_due_at
from .execution import job_logger, owner

if TYPE_CHECKING:
    from .config import JobConfig
    from .signals import StopFlag


def delay(job: JobConfig, host: str, due: datetime | None) -> timedelta:
    """This host's delay for the slot due at `due` (None: a job never run), in [0, job.jitter)."""
    if not job.jitter:
        return timedelta(0)
    slot = due.isoformat() if due is not None else "first"
    digest = hashlib.sha256(f"{host}\0{job.name}\0{slot}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    return job.jitter * fraction


def wait(job: JobConfig, row: Any, stop: StopFlag) -> None:
    """Wait this host's delay for the slot the tracking row (a mapping, or None) says is owed; raises
    Interrupted on a signal."""
    if not job.jitter:
        return
    host, _ = owner()
    seconds = delay(job, host, next_due_at(row, job)).total_seconds()
    if seconds <= 0:
        return
    job_logger(job.name, None).info("waiting %.3fs (jitter) before starting", seconds)
    stop.sleep(seconds)
