"""The execution-tracking table and the run history. Each write is its own short transaction."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from . import slots
from .catch_up import slots_between, started_slot
from .clock import is_never
from .due import due_state, next_due_at  # noqa: F401 - part of this module's API
from .models import executions, runs
from .outcome import RunStatus, Trigger
from .schedule import DueState, next_due, retry_at, satisfied_slot
from .schema import require

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine, RowMapping

    from .config import Config, JobConfig
    from .retention import HistoryPolicy

log = logging.getLogger("cronwarden.tracking")
DIED = "the process running it died (no outcome recorded)"


def read_state(engine: Engine, job: str) -> RowMapping | None:
    """The job's tracking row: the one indexed read a not-due tick costs, after the schema's version (read
    once per engine; a command that writes may create the embedded default database's tables)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        require(engine, writes=True, conn=conn)
        return conn.execute(select(executions).where(executions.c.job_name == job)).mappings().first()


def reap_abandoned(engine: Engine, job: JobConfig, now: datetime) -> int:
    """Runs still 'running' while we hold the lock died with their process: mark them abandoned.

    Called only under the job's lock, so no live run can be among them.
    """
    with engine.begin() as conn:
        stale = conn.execute(
            select(runs.c.id, runs.c.started_at).where(runs.c.job_name == job.name, runs.c.status == "running")
        ).all()
        if not stale:
            return 0
        conn.execute(
            update(runs)
            .where(runs.c.id.in_([r.id for r in stale]))
            .values(status=RunStatus.ABANDONED.value, finished_at=now, error=DIED)
        )
        row = conn.execute(select(executions).where(executions.c.job_name == job.name)).mappings().first()
        if row is not None and row["last_status"] == RunStatus.RUNNING.value:
            failures = (row["consecutive_failures"] or 0) + 1
            started = row["last_executed_at"] or now
            retry = retry_at(job.schedule, job.retry_delays, failures, row["schedule_slot_at"], started)
            conn.execute(
                update(executions)
                .where(executions.c.job_name == job.name)
                .values(last_status=RunStatus.ABANDONED.value, last_finished_at=now, last_error=DIED,
                        last_failure_at=now, last_failure_error=DIED,
                        consecutive_failures=failures, next_retry_at=retry, next_scheduled_at=retry)
            )
    return len(stale)


def start_run(engine: Engine, job: JobConfig, trigger: Trigger, now: datetime, host: str, pid: int, *,
              slot: datetime | None = None, abandoned_after: timedelta = timedelta(0)) -> int:
    """Record the run as running, claiming `slot` (jobs.slots) in the same transaction; returns its id.

    A slot another run holds makes this run `duplicate_slot`, finished at once, and raises slots.SlotTaken
    once that is committed; the tracking row is left to the holder. Any other start pays a run owed by a tick
    that found the job running (jobs.overlap.owe_run): it starts after that tick, so it clears owed_run_at.
    """
    refused = None
    with engine.begin() as conn:
        run_id = int(conn.execute(
            insert(runs).values(job_name=job.name, status=RunStatus.RUNNING.value, trigger=trigger.value,
                                host=host, pid=pid, started_at=now, items=0)
        ).inserted_primary_key[0])  # type: ignore[index]  # an INSERT of one row has its key
        holder = None if slot is None else slots.claim(conn, job.name, slot, run_id, now, abandoned_after)
        if holder is not None and slot is not None:
            refused = holder.describe(slot)
            conn.execute(update(runs).where(runs.c.id == run_id).values(
                status=RunStatus.DUPLICATE_SLOT.value, finished_at=now, duration_seconds=0.0, error=refused))
        else:
            values: dict[str, Any] = {}
            skipped = _skipped_before(conn, job, now)
            if skipped:
                values["missed_slots"] = executions.c.missed_slots + skipped
            _upsert(conn, job.name, now, last_status=RunStatus.RUNNING.value, last_run_id=run_id,
                    last_executed_at=now, last_executed_by=f"{host}:{pid}", owed_run_at=None, **values)
    if refused is not None:
        raise slots.SlotTaken(run_id, refused)
    return run_id


def _skipped_before(conn: Connection, job: JobConfig, now: datetime) -> int:
    """Under `catch_up = "none"`, the slots a run starting now leaves behind: those strictly between the
    latest slot the job dealt with (schedule.started_slot) and the slot this run serves. Under "one" the
    slots a catch-up run stands for are not counted: none is given up (see README, Schedules and due-ness)."""
    if job.catch_up != "none":
        return 0
    row = conn.execute(select(executions.c.schedule_slot_at, executions.c.last_executed_at)
                       .where(executions.c.job_name == job.name)).first()
    if row is None or row.schedule_slot_at is None:
        return 0
    anchor = row.schedule_slot_at
    dealt = started_slot(job.schedule, anchor, row.last_executed_at)
    serves = satisfied_slot(job.schedule, anchor, now)
    if dealt is None or serves <= dealt:
        return 0
    return max(slots_between(job.schedule, anchor, dealt, serves) - 1, 0)


def record_skip(engine: Engine, job: JobConfig, slot: datetime, now: datetime) -> tuple[int, datetime | None]:
    """A `catch_up = "none"` tick skips `slot` and every earlier slot not dealt with (called under the job's
    lock, and compared with the anchor it read): they are added to missed_slots and `slot` becomes the
    schedule's anchor, so the job is due at its next slot and is not overdue for the ones it skipped.
    Returns (slots skipped, when it is next due)."""
    with engine.begin() as conn:
        row = conn.execute(select(executions).where(executions.c.job_name == job.name)).mappings().first()
        anchor = row["schedule_slot_at"] if row is not None else None
        due = job.schedule.slot_after(slot, slot)
        due_at = None if is_never(due) else due
        if row is None or anchor is None or slot <= anchor:
            return 0, due_at
        dealt = started_slot(job.schedule, anchor, row["last_executed_at"]) or anchor
        skipped = slots_between(job.schedule, anchor, dealt, slot) if slot > dealt else 0
        values: dict[str, Any] = dict(schedule_slot_at=slot, next_scheduled_at=due_at,
                                      missed_slots=executions.c.missed_slots + skipped)
        if row["consecutive_failures"]:
            values["next_retry_at"] = due_at
        moved = conn.execute(update(executions).where(executions.c.job_name == job.name,
                                                      executions.c.schedule_slot_at == anchor).values(**values))
    # Compared with the anchor it read: a second skipper behind a broken lock counts nothing twice.
    return (skipped if moved.rowcount == 1 else 0), due_at


def run_owners(engine: Engine, run_ids: Iterable[int]) -> dict[int, tuple[str | None, int | None]]:
    """The host and pid of these runs (the running ones `status` and `check` name as holders)."""
    ids = [i for i in run_ids if i is not None]
    if not ids:
        return {}
    with engine.connect() as conn:
        return {r.id: (r.host, r.pid) for r in conn.execute(select(runs.c.id, runs.c.host, runs.c.pid)
                                                             .where(runs.c.id.in_(ids)))}


def record_counts(conn: Connection, run_id: int, counts: dict[str, int]) -> None:
    """A running run's counts so far, written inside the batch transaction that made them true."""
    conn.execute(update(runs).where(runs.c.id == run_id).values(
        items=sum(counts.values()), counts=json.dumps(counts, sort_keys=True)))


def finish_run(
    engine: Engine,
    job: JobConfig,
    run_id: int,
    status: RunStatus,
    started: datetime,
    finished: datetime,
    counts: dict[str, int],
    error: str | None,
    *,
    keep: bool = True,
) -> datetime | None:
    """Record the outcome; only a success moves the schedule. Returns when the job is next due.

    A failure (RunStatus.counts_as_failure) is also written to last_failure_at/_error, which outlive the
    history's retention of its run: with last_success_at and the streak, the tracking row alone tells
    when the job last worked and how it last broke.

    keep=False deletes the run's history row (see `kept`) in the same transaction; the tracking row is
    updated all the same.
    """
    duration = (finished - started).total_seconds()
    with engine.begin() as conn:
        if keep:
            conn.execute(
                update(runs).where(runs.c.id == run_id).values(
                    status=status.value, finished_at=finished, duration_seconds=duration,
                    items=sum(counts.values()), counts=json.dumps(counts, sort_keys=True), error=error)
            )
        else:
            conn.execute(delete(runs).where(runs.c.id == run_id))
        row = conn.execute(select(executions).where(executions.c.job_name == job.name)).mappings().first()
        if row is None or row["last_run_id"] != run_id:
            slots.settle(conn, job.name, run_id, status, None)
            return None
        values: dict[str, Any] = dict(last_status=status.value, last_finished_at=finished,
                                      last_duration_seconds=duration, last_error=error)
        slot = row["schedule_slot_at"]
        failures = row["consecutive_failures"] or 0
        if status is RunStatus.SUCCEEDED:
            slot = satisfied_slot(job.schedule, slot, started)
            values.update(last_success_at=finished, schedule_slot_at=slot, consecutive_failures=0,
                          next_retry_at=None, last_error=None)
            due = next_due(job.schedule, DueState(last_slot_at=slot))
        elif status.counts_as_failure:
            failures += 1
            due = retry_at(job.schedule, job.retry_delays, failures, slot, started)
            values.update(consecutive_failures=failures, next_retry_at=due, last_failure_at=finished,
                          last_failure_error=error)
        else:
            due = row["next_retry_at"] if failures else next_due(job.schedule, DueState(last_slot_at=slot))
        slots.settle(conn, job.name, run_id, status, slot)
        due = None if due is not None and is_never(due) else due
        values["next_scheduled_at"] = due
        conn.execute(update(executions).where(executions.c.job_name == job.name).values(**values))
    return due


HISTORY_PRUNE_BATCH = 1_000  # history rows deleted per transaction (at most)


_SUCCEEDED, _RUNNING = RunStatus.SUCCEEDED.value, RunStatus.RUNNING.value


def prune_history(engine: Engine, job: str, now: datetime, policy: HistoryPolicy, *, spare: int | None = None) -> int:
    """Delete the job's finished runs past their outcome's retention: succeeded runs started before
    now − keep_succeeded, every other finished run before now − keep_failed. A `running` row is never
    deleted, nor `spare` (the run that just finished: one that outlasted its retention started before the
    cutoff). HISTORY_PRUNE_BATCH rows per transaction at most (keyset on started_at and id: a backlog of
    ties, e.g. after shortening the retention, stays bounded); both outcomes share a transaction while it
    has room, so a run with nothing to prune costs one transaction, as before retention by outcome."""
    from .batches import oldest_first

    mine = [runs.c.job_name == job] + ([runs.c.id != spare] if spare is not None else [])
    todo = [([*mine, runs.c.status == _SUCCEEDED], now - policy.keep_succeeded),
            ([*mine, runs.c.status.notin_((_SUCCEEDED, _RUNNING))], now - policy.keep_failed)]
    deleted, after = 0, None
    while todo:
        with engine.begin() as conn:
            room = HISTORY_PRUNE_BATCH
            while todo and room > 0:
                where, before = todo[0]
                n, after = oldest_first(conn, runs, runs.c.started_at, runs.c.id, before, room, after, where=where)
                deleted, room = deleted + n, room - n
                if after is not None:
                    break  # this outcome has more: the next transaction goes on from `after`
                todo.pop(0)
    return deleted


def kept(job: JobConfig, status: RunStatus, trigger: Trigger, counts: dict[str, int]) -> bool:
    """Whether a finished run keeps its history row.

    With `history = "work"` (the default) a scheduled run that succeeded with every counter at zero leaves
    none: an email-queue ticking every 10 s would otherwise write 8,640 rows a day saying "nothing to do".
    Failures, interruptions, timeouts, runs that did work and runs an operator started are always kept.
    The row is still inserted when the run starts, so a crash leaves its `running` row to be reaped as
    `abandoned`; only a finished idle run's row is deleted.
    """
    if job.history.runs == "all" or status is not RunStatus.SUCCEEDED or trigger is not Trigger.SCHEDULED:
        return True
    return any(counts.values())


def _upsert(conn: Connection, job: str, seen: datetime, **values: Any) -> None:
    """Update the job's row, or insert it; `seen` becomes its first_seen_at unless one is stored."""
    values["first_seen_at"] = func.coalesce(executions.c.first_seen_at, seen)
    if conn.execute(update(executions).where(executions.c.job_name == job).values(**values)).rowcount:
        return
    try:
        with conn.begin_nested():
            conn.execute(insert(executions).values({"job_name": job, "consecutive_failures": 0, "paused": False,
                                                    **values, "first_seen_at": seen}))
    except IntegrityError:
        conn.execute(update(executions).where(executions.c.job_name == job).values(**values))


def watched(config: Config) -> list[str]:
    """The jobs whose first sighting starts an overdue clock: enabled, with a schedule a tick honours."""
    from .due import recurring

    return recurring(config)


def note_seen(engine: Engine, names: list[str], now: datetime) -> list[str]:
    """Remember when the database first knew each job: the start of a never-run job's overdue clock.

    Returns the jobs it wrote (those without a first_seen_at); the others cost one read.
    """
    with engine.begin() as conn:
        known = dict(conn.execute(select(executions.c.job_name, executions.c.first_seen_at)
                                  .where(executions.c.job_name.in_(names))).all())
        new = [name for name in names if known.get(name) is None]
        for name in new:
            _upsert(conn, name, now)
    return new


def set_paused(engine: Engine, job: str, paused: bool, by: str, now: datetime) -> bool:
    """Pause or resume everywhere at once; returns whether anything changed."""
    require(engine, writes=True)
    with engine.begin() as conn:
        row = conn.execute(select(executions.c.paused).where(executions.c.job_name == job)).first()
        if row is not None and bool(row.paused) == paused:
            return False
        _upsert(conn, job, now, paused=paused, paused_at=now if paused else None, paused_by=by if paused else None)
    return True


def all_states(engine: Engine, seen: Iterable[str] = (), now: datetime | None = None) -> dict[str, RowMapping]:
    """Every tracking row; the jobs in `seen` that the database did not know yet are noted as first seen
    `now` where this connection may write (a read-only one simply leaves them unknown)."""
    def read() -> dict[str, RowMapping]:
        with engine.connect() as conn:
            return {r["job_name"]: r for r in conn.execute(select(executions)).mappings().all()}

    require(engine, writes=False)
    states = read()
    unseen = [name for name in seen if name not in states or states[name]["first_seen_at"] is None]
    if unseen and now is not None:
        try:
            note_seen(engine, unseen, now)
        except DBAPIError as exc:
            log.debug("could not note %s as first seen: %s", ", ".join(unseen), exc)
            return states
        states = read()
    return states


def history(engine: Engine, job: str | None, limit: int, *, failed: bool = False) -> list[RowMapping]:
    """The most recent runs, newest first; failed=True: only the finished runs that did not succeed (those
    `keep_failed` keeps)."""
    query = select(runs).order_by(runs.c.started_at.desc(), runs.c.id.desc()).limit(limit)
    if job:
        query = query.where(runs.c.job_name == job)
    if failed:
        query = query.where(runs.c.status.notin_((_SUCCEEDED, _RUNNING)))

    require(engine, writes=False)
    with engine.connect() as conn:
        return list(conn.execute(query).mappings().all())


def run_counts(engine: Engine) -> dict[tuple[str, str], int]:
    """Runs per (job, status) still in history, for metrics."""
    query = select(runs.c.job_name, runs.c.status, func.count()).group_by(runs.c.job_name, runs.c.status)

    require(engine, writes=False)
    with engine.connect() as conn:
        return {(job, status): n for job, status, n in conn.execute(query).all()}
