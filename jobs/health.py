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
    its process hangs holding the lock, or died and no later tick has reaped it yet; stuck outranks failing,
    as a retry that hangs is the news).

    holder_host, holder_pid, holder_run_id: the run a `running` or `stuck` job is in (its history row's host
    and pid, else the tracking row's last_executed_by), so an operator knows which process to look at.

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
    owed_run_at: datetime | None = None
    holder_host: str | None = None
    holder_pid: int | None = None
    holder_run_id: int | None = None
    stuck_after: timedelta | None = None  # timeout (or 6 h) + grace, for a running job

    @property
    def holder(self) -> str | None:
        """`host:pid` of the running run, as `check` and `status` name it."""
        if self.holder_host is None:
            return None
        return f"{self.holder_host}:{self.holder_pid}" if self.holder_pid is not None else self.holder_host

    @property
    def alarming(self) -> bool:
        return self.state in ("overdue", "failing", "stuck")

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = value.isoformat()
            elif isinstance(value, timedelta):
                out[key] = value.total_seconds()
        return out


Owners = Mapping[int, tuple[str | None, int | None]]


def assess(config: Config, states: Mapping[str, Any], now: datetime, owners: Owners | None = None) -> list[JobHealth]:
    """owners: host and pid by run id (jobs.tracking.run_owners) for the runs the rows say are running."""
    return [_assess_one(config, name, states.get(name), now, owners or {}) for name in config.jobs]


def running_runs(states: Mapping[str, Any]) -> list[int]:
    """The run ids whose holders `assess` names: the tracking rows' last runs that are still `running`."""
    return [row["last_run_id"] for row in states.values()
            if row["last_status"] == RunStatus.RUNNING.value and row["last_run_id"] is not None]


def _holder(row: Any, owners: Owners) -> tuple[str | None, int | None, int | None]:
    run_id = row["last_run_id"]
    if run_id in owners:
        return (*owners[run_id], run_id)
    host, _, pid = (row["last_executed_by"] or "").rpartition(":")
    return (host or None, int(pid) if pid.isdigit() else None, run_id) if host else (None, None, run_id)


def _assess_one(config: Config, name: str, row: Any, now: datetime, owners: Owners) -> JobHealth:
    job = config.jobs[name]
    get = (lambda key: row[key]) if row is not None else (lambda key: None)
    due = next_due_at(row, job)
    never = get("last_success_at") is None
    owed = first_slot(job.schedule, get("first_seen_at")) if due is None and never else due
    failures = get("consecutive_failures") or 0
    last_status = get("last_status")
    overdue = ((now - owed) - job.grace).total_seconds() if owed is not None else 0.0
    running = last_status == RunStatus.RUNNING.value
    limit = (job.timeout or STUCK_AFTER) + job.grace if running else None
    started = get("last_executed_at")
    holder = _holder(row, owners) if running else (None, None, None)
    if not job.enabled:
        state = "disabled"
    elif get("paused"):
        state = "paused"
    elif limit is not None and started is not None and now - started > limit:
        state = "stuck"
    elif failures > 0:
        state = "failing"
    elif running:
        state = "running"
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
        owed_run_at=get("owed_run_at"),
        holder_host=holder[0],
        holder_pid=holder[1],
        holder_run_id=holder[2],
        stuck_after=limit,
    )
