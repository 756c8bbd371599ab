"""The database's fence: one scheduled run per (job, slot), whatever the locks believe.

A lock decides who runs; it can be wrong (a lease broken by `cronwarden unlock` or expired under a stalled
holder, two hosts whose file locks do not see each other). So a scheduled run claims the schedule slot it
serves in the transaction that records its start: a row in `job_slots`, whose primary key (job_name, slot_at)
refuses a second claim on every database. The loser records `duplicate_slot` and does no work (GoodJob's
unique (cron_key, cron_at), Procrastinate's unique periodic defer).

The claim belongs to a run that has not failed:
- a run that ends failed, timed_out or interrupted releases it with its outcome, so the slot's retry runs;
- a run reaped `abandoned` keeps it for `[locks] host_loss_bound` after it was reaped: the reaper may be the
  second holder of a broken lock, and a holder that lost its lock notices and stops within that bound; after
  it, the slot's retry may take the claim over;
- a success keeps it, and deletes the job's claims of earlier slots (a job holds one or two rows).

Forced and manual runs (`--force`, `demo`) and `once` jobs claim nothing: an operator's run is never refused.
An interval job's very first run has no grid yet (its start becomes the anchor), so it has no slot to share;
it is fenced from its second run on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from .models import runs, slots
from .outcome import RunStatus, Trigger
from .schedule import Interval, Once, satisfied_slot

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, RowMapping

    from .config import JobConfig

_RELEASED = frozenset({RunStatus.FAILED.value, RunStatus.TIMED_OUT.value, RunStatus.INTERRUPTED.value})


def served(job: JobConfig, row: RowMapping | None, trigger: Trigger, started: datetime) -> datetime | None:
    """The slot a run starting now serves (the one its success would fulfil), or None when it claims none."""
    if trigger is not Trigger.SCHEDULED or isinstance(job.schedule, Once):
        return None
    last = row["schedule_slot_at"] if row is not None else None
    if last is None and isinstance(job.schedule, Interval):
        return None
    return satisfied_slot(job.schedule, last, started)


class SlotTaken(Exception):
    """Raised once a refused start is recorded: `run_id` is the `duplicate_slot` run, `message` names the holder."""

    def __init__(self, run_id: int, message: str) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.message = message


@dataclass(frozen=True)
class Holder:
    """The run that already holds a slot, as the refused run's error names it."""

    run_id: int
    status: str | None
    host: str | None
    pid: int | None

    def describe(self, slot: datetime) -> str:
        who = f" on {self.host}:{self.pid}" if self.host else ""
        state = f", {self.status}" if self.status else ""
        return f"slot {slot.isoformat()} already claimed by run {self.run_id}{who}{state}; no work done"


def claim(conn: Connection, job: str, slot: datetime, run_id: int, now: datetime,
          abandoned_after: timedelta) -> Holder | None:
    """Claim `slot` for `run_id` inside the caller's start transaction; the holder when another run has it."""
    try:
        with conn.begin_nested():
            conn.execute(insert(slots).values(job_name=job, slot_at=slot, run_id=run_id, claimed_at=now))
        return None
    except IntegrityError:
        pass
    found = conn.execute(
        select(slots.c.run_id, runs.c.status, runs.c.host, runs.c.pid, runs.c.finished_at)
        .select_from(slots.outerjoin(runs, runs.c.id == slots.c.run_id))
        .where(slots.c.job_name == job, slots.c.slot_at == slot)
    ).first()
    if found is None:  # released between our insert and this read: one more try, under the same rules
        return claim(conn, job, slot, run_id, now, abandoned_after)
    holder = Holder(found.run_id, found.status, found.host, found.pid)
    if not _released(found.status, found.finished_at, now, abandoned_after):
        return holder
    taken = conn.execute(update(slots).where(slots.c.job_name == job, slots.c.slot_at == slot,
                                             slots.c.run_id == found.run_id)
                         .values(run_id=run_id, claimed_at=now)).rowcount
    return None if taken == 1 else holder


def _released(status: str | None, finished: datetime | None, now: datetime, abandoned_after: timedelta) -> bool:
    if status in _RELEASED:
        return True
    return status == RunStatus.ABANDONED.value and finished is not None and finished + abandoned_after <= now


def settle(conn: Connection, job: str, run_id: int, status: RunStatus, slot: datetime | None) -> None:
    """With the run's outcome: a success keeps its claim and drops older ones; anything else releases it."""
    if status is RunStatus.SUCCEEDED:
        if slot is not None:
            conn.execute(delete(slots).where(slots.c.job_name == job, slots.c.slot_at < slot))
        return
    conn.execute(delete(slots).where(slots.c.job_name == job, slots.c.run_id == run_id))
