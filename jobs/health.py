"""What `status`, `check` and metrics say about each job: the tracking rows judged against the config."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .outcome import RunStatus
from .schedule import first_slot
from .tracking import next_due_at

if TYPE_CHECKING:
    from .config import Config

STUCK_AFTER = timedelta(hours=6)


@dataclass(frozen=True)
class JobHealth:
    """state: ok | pending (never succeeded, not yet past its first slot + grace) | overdue (past next due
    + grace; for a job that never succeeded, its first slot after the database first knew it, + grace) |
    failing | paused | disabled | running | stuck (still `running` past its timeout, or 6 h, plus grace:
    its process most likely died and no later tick has reaped it yet).

    missed_slots: slots a `catch_up = "none"` job skipped so far (recurring_job_executions.missed_slots). A
    skip moves the schedule past the slots it skipped, so a job that skipped them is not overdue for them;
    one whose ticks stopped has skipped nothing yet and is overdue as any other."""

    name: str
    schedule: str
    enabled: bool
    paused: bool
    state: str
    last_status: str | None
    last_executed_at: datetime | None
    last_executed_by: str | None
    last_success_at: datetime | None
    last_duration_seconds: float | None
    next_due_at: datetime | None
    consecutive_failures: int
    last_error: str | None
    overdue_seconds: float
    first_seen_at: datetime | None = None
    last_failure_at: datetime | None = None  # the latest failed run, kept whatever the history's retention
    last_failure_error: str | None = None
    missed_slots: int = 0

    @property
    def alarming(self) -> bool:
        return self.state in ("overdue", "failing", "stuck")

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
        return out


def assess(config: Config, states: Mapping[str, Any], now: datetime) -> list[JobHealth]:
    return [_assess_one(config, name, states.get(name), now) for name in config.jobs]


def _assess_one(config: Config, name: str, row: Any, now: datetime) -> JobHealth:
    job = config.jobs[name]
    get = (lambda key: row[key]) if row is not None else (lambda key: None)
    due = next_due_at(row, job)
    never = get("last_success_at") is None
    owed = first_slot(job.schedule, get("first_seen_at")) if due is None and never else due
    failures = get("consecutive_failures") or 0
    last_status = get("last_status")
    overdue = ((now - owed) - job.grace).total_seconds() if owed is not None else 0.0
    if not job.enabled:
        state = "disabled"
    elif get("paused"):
        state = "paused"
    elif failures > 0:
        state = "failing"
    elif last_status == RunStatus.RUNNING.value:
        started = get("last_executed_at")
        limit = (job.timeout or STUCK_AFTER) + job.grace
        state = "stuck" if started is not None and now - started > limit else "running"
    elif overdue > 0:
        state = "overdue"
    elif never:
        state = "pending"
    else:
        state = "ok"
    return JobHealth(
        name=name,
        schedule=job.schedule.describe(),
        enabled=job.enabled,
        paused=bool(get("paused")),
        state=state,
        last_status=last_status,
        last_executed_at=get("last_executed_at"),
        last_executed_by=get("last_executed_by"),
        last_success_at=get("last_success_at"),
        last_duration_seconds=get("last_duration_seconds"),
        next_due_at=due,
        consecutive_failures=failures,
        last_error=get("last_error"),
        overdue_seconds=max(overdue, 0.0) if state == "overdue" else 0.0,
        first_seen_at=get("first_seen_at"),
        last_failure_at=get("last_failure_at"),
        last_failure_error=get("last_failure_error"),
        missed_slots=get("missed_slots") or 0,
    )
