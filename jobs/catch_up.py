"""The misfire policy's maths, pure and import-light like jobs.schedule: which owed slot a `catch_up = "none"`
tick skips, and how many slots lie between two (the count kept in recurring_job_executions.missed_slots).

Under "one" (the default) the first tick after downtime runs once, for the latest slot; under "none" a slot
older than the job's catch_up_window is skipped with every earlier one, and the job waits for its next slot.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from .schedule import DueState, Interval, Once, Schedule, is_due, satisfied_slot


def stale_slot(schedule: Schedule, state: DueState | None, now: datetime, window: timedelta) -> datetime | None:
    """Under `catch_up = "none"`: the latest slot at or before now when a run is owed but that slot is older
    than the window; the tick skips it and every earlier one and the job waits for its next slot. None when
    nothing is owed, the owed slot is still within the window (it runs), the job never succeeded (it has no
    slot yet) or a backoff retry is owed (never skipped)."""
    if state is None or state.last_slot_at is None or state.in_backoff or isinstance(schedule, Once):
        return None
    if not is_due(schedule, state, now):
        return None
    latest = schedule.slot_at_or_before(state.last_slot_at, now + schedule.tolerance())
    return latest if now - latest > window else None


MISSED_COUNT_EXACT = 10_000
"""Cron fires counted one by one between two slots (8 µs each); beyond, the rest is estimated at the rate of
those counted (exact for an even schedule: a minutely one stopped for a week counts 10,080)."""


def slots_between(schedule: Schedule, anchor: datetime | None, after: datetime, until: datetime) -> int:
    """How many slots s the schedule has with after < s <= until (an interval's grid starts at anchor)."""
    if until <= after or isinstance(schedule, Once):
        return 0
    if isinstance(schedule, Interval):
        if anchor is None:
            return 0
        return (until - anchor) // schedule.every - (after - anchor) // schedule.every
    fire, count = schedule.next_after(after), 0
    while fire <= until:
        count += 1
        if count == MISSED_COUNT_EXACT:
            rate = (fire - after) / count
            return count + int((until - fire) / rate)
        fire = schedule.next_after(fire)
    return count


def started_slot(schedule: Schedule, last_slot_at: datetime | None,
                 last_started_at: datetime | None) -> datetime | None:
    """The latest slot the job has dealt with: fulfilled by a success, skipped, or served by a run that started
    (whatever its outcome: a slot that ran and failed is failing, not missed)."""
    if last_slot_at is None or last_started_at is None:
        return last_slot_at
    return satisfied_slot(schedule, last_slot_at, last_started_at)
