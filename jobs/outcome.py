"""Outcomes of one invocation, shared by the runner, tracking and the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from .records import Record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see jobs/__init__.py)
if TYPE_CHECKING:
    from typing import Any


class RunStatus(str, Enum):
    """What happened to a job on one invocation.

    Statuses of real runs are stored in the history table; skip statuses are
    only reported (a skipped tick leaves no history row). `duplicate_slot` is stored
    but did no work: a second holder of a slot the database refused.
    """

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"
    ABANDONED = "abandoned"
    DUPLICATE_SLOT = "duplicate_slot"  # refused at its start: another run holds its schedule slot (jobs.slots)
    NOT_DUE = "not_due"
    LOCKED = "locked"
    DISABLED = "disabled"
    PAUSED = "paused"
    DRY_RUN = "dry_run"

    @property
    def is_skip(self) -> bool:
        return self in _SKIPS

    @property
    def counts_as_failure(self) -> bool:
        """Failures extend the streak and schedule a backoff retry."""
        return self in _FAILURES


_SKIPS = frozenset({RunStatus.NOT_DUE, RunStatus.LOCKED, RunStatus.DISABLED, RunStatus.PAUSED})
_FAILURES = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.ABANDONED})


class Trigger(str, Enum):
    SCHEDULED = "scheduled"
    MANUAL = "manual"
    FORCED = "forced"


@dataclass(init=False, repr=False, eq=False)
class RunReport(Record):
    """The result of one invocation of one job, rendered by the CLI."""

    job: str
    status: RunStatus
    trigger: Trigger = Trigger.SCHEDULED
    run_id: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    next_due_at: datetime | None = None
    temporary: bool = False
    config_error: bool = False
    signal: int | None = None
    details: list[str] = field(default_factory=list)
    transactions: int = 0
    longest_transaction_seconds: float = 0.0
    largest_batch_items: int = 0
    owed_run: RunReport | None = None  # the run a busy tick owed, started right after this one (buffer_one)

    def __init__(self, job: str, status: RunStatus, trigger: Trigger = Trigger.SCHEDULED, run_id: int | None = None,
                 started_at: datetime | None = None, finished_at: datetime | None = None,
                 counts: dict[str, int] | None = None, error: str | None = None,
                 next_due_at: datetime | None = None, temporary: bool = False, config_error: bool = False,
                 signal: int | None = None, details: list[str] | None = None, transactions: int = 0,
                 longest_transaction_seconds: float = 0.0, largest_batch_items: int = 0,
                 owed_run: RunReport | None = None) -> None:
        self.job = job
        self.status = status
        self.trigger = trigger
        self.run_id = run_id
        self.started_at = started_at
        self.finished_at = finished_at
        self.counts = {} if counts is None else counts
        self.error = error
        self.next_due_at = next_due_at
        self.temporary = temporary
        self.config_error = config_error
        self.signal = signal
        self.details = [] if details is None else details
        self.transactions = transactions
        self.longest_transaction_seconds = longest_transaction_seconds
        self.largest_batch_items = largest_batch_items
        self.owed_run = owed_run

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def as_dict(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "job": self.job,
            "status": self.status.value,
            "trigger": self.trigger.value,
            "run_id": self.run_id,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "duration_seconds": self.duration_seconds,
            "counts": dict(self.counts),
            "error": self.error,
            "next_due_at": iso(self.next_due_at),
            "details": list(self.details),
            "transactions": self.transactions,
            "longest_transaction_seconds": round(self.longest_transaction_seconds, 6),
            "largest_batch_items": self.largest_batch_items,
            **({"owed_run": self.owed_run.as_dict()} if self.owed_run is not None else {}),
        }
