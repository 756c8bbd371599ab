"""The due decision of a scheduled tick, pure and import-light: shared by the runner and the quick path
(cli/front.py), which decides "nothing to do" before SQLAlchemy or the CLI framework are imported."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from .catch_up import stale_slot
from .outcome import RunReport, RunStatus, Trigger
from .schedule import DueState, is_due, next_due

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see jobs/__init__.py)
if TYPE_CHECKING:
    from typing import Any

    from .config import Config, JobConfig

LOCKED_MESSAGE = "skipped: another process holds the lock"
# A locked tick of an `overlap = "buffer_one"` job: the run is owed (recurring_job_executions.owed_run_at), not lost.
BUFFERED_MESSAGE = "buffered: another process holds the lock; one run is owed and starts when it finishes"
# The version of the tool's tables (jobs.migrations): 2 added queued_jobs, 3 recurring_job_executions.first_seen_at,
# 4 job_slots, 5 recurring_job_executions.missed_slots, owed_run_at, last_failure_at and last_failure_error.
SCHEMA_VERSION = 5
# The tracking table's columns, in jobs.models order: a tick reads them all, so a table that lacks one is
# noticed by the quick path as by the runner (tests/test_quick_path.py checks the two agree).
EXECUTION_COLUMNS = (
    "job_name", "last_executed_at", "next_scheduled_at", "last_executed_by", "last_status", "last_run_id",
    "last_finished_at", "last_duration_seconds", "last_error", "last_success_at", "schedule_slot_at",
    "consecutive_failures", "next_retry_at", "paused", "paused_at", "paused_by", "first_seen_at",
    "missed_slots", "owed_run_at", "last_failure_at", "last_failure_error",
)


def recurring(config: Config) -> list[str]:
    """The jobs `run-due` ticks, in the configuration's order: enabled, with a schedule a tick honours
    (one-shot jobs are run explicitly)."""
    from .schedule import Once

    return [name for name, job in config.jobs.items() if job.enabled and not isinstance(job.schedule, Once)]


def due_state(row: Mapping[str, Any] | None, job: JobConfig) -> DueState | None:
    if row is None:
        return None
    return DueState(
        last_slot_at=row["schedule_slot_at"],
        consecutive_failures=row["consecutive_failures"] or 0,
        next_retry_at=row["next_retry_at"],
        backoff_steps=len(job.retry_delays),
    )


def next_due_at(row: Mapping[str, Any] | None, job: JobConfig) -> datetime | None:
    return next_due(job.schedule, due_state(row, job))


def skip(job: JobConfig, row: Mapping[str, Any] | None, trigger: Trigger, now: datetime) -> RunReport | None:
    """The report of a scheduled tick that runs nothing (paused, not due), or None when the job is owed a run:
    by its schedule, or by a tick that found it running (`owed_run_at`, overlap = "buffer_one").

    Under `catch_up = "none"` an owed slot may be stale (`stale`): that tick runs nothing either, but it
    records the slots it skips, a write, so it is None here too; the runner records it under the job's lock
    and the quick path, which never writes, hands it over as any owed run."""
    if trigger is not Trigger.SCHEDULED:
        return None
    if row is not None and row["paused"]:
        return RunReport(job.name, RunStatus.PAUSED, trigger)
    if not is_due(job.schedule, due_state(row, job), now) and not owed(row):
        return RunReport(job.name, RunStatus.NOT_DUE, trigger, next_due_at=next_due_at(row, job))
    return None


def stale(job: JobConfig, row: Mapping[str, Any] | None, now: datetime) -> datetime | None:
    """The latest slot a scheduled tick of a `catch_up = "none"` job skips with every earlier one (older than
    the job's catch_up_window), or None when it runs or has nothing to do (schedule.stale_slot)."""
    if job.catch_up != "none":
        return None
    state = due_state(row, job)
    if state is None or not is_due(job.schedule, state, now):
        return None
    window = job.catch_up_window  # a cron job's default (its grace) samples the schedule: worked out only here
    assert window is not None  # catch_up = "none" always has one
    return stale_slot(job.schedule, state, now, window)


def owed(row: Any) -> bool:
    """Whether a tick that found the job running left a run owed (at most one: jobs.overlap.owe_run); `row`
    is the tracking row as a mapping (SQLAlchemy's or the quick path's), or None."""
    return row is not None and row.get("owed_run_at") is not None


def owed_only(job: JobConfig, row: Any, trigger: Trigger, now: datetime) -> bool:
    """A scheduled run started only because a run is owed, its schedule not due: it serves no slot (jobs.slots)."""
    return trigger is Trigger.SCHEDULED and owed(row) and not is_due(job.schedule, due_state(row, job), now)


def locked(job: JobConfig, trigger: Trigger, buffered: bool) -> RunReport:
    """The report of a tick that found the lock busy; a buffered one says so in its details and log line."""
    return RunReport(job.name, RunStatus.LOCKED, trigger, details=[BUFFERED_MESSAGE] if buffered else [])


def locked_line(report: RunReport) -> str:
    """The log line of a locked tick, as the runner and the quick path both write it."""
    return BUFFERED_MESSAGE if BUFFERED_MESSAGE in report.details else LOCKED_MESSAGE
