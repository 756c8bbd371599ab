"""The operators' use-cases of the queue (`enqueue`, `work`, `queue list|show|retry|cancel|prune`): each
runs its reads and writes through the queue's store and returns values the CLI renders."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import UsageError
from ..operations.common import retried

if TYPE_CHECKING:
    from ..app import App
    from . import TaskSpec
    from .store import Enqueued
    from .worker import WorkReport

T = TypeVar("T")


def _db(app: App, fn: Callable[[], T], what: str) -> T:
    """Retried like every database call, once the tool's tables are known to be this version's (a command
    that writes to the embedded default database creates them; elsewhere that is `db upgrade`'s work)."""
    from ..schema import require

    def checked() -> T:
        require(app.engine, writes=not app.read_only)
        return fn()

    return retried(app, checked, what)


@dataclass(frozen=True)
class Request:
    """A task and its validated arguments, ready to queue."""

    task: TaskSpec
    args: dict[str, Any]


def request(job: str, raw_args: Mapping[str, str]) -> Request:
    """The task and its arguments given as text (the CLI's KEY=VALUE), validated against its declaration
    before any configuration is read or anything connected (InvalidArguments: exit 2)."""
    from . import find_task, validate_args

    task = find_task(job)
    validated = validate_args(task, raw_args, from_text=True)
    return Request(task, {f: getattr(validated, f) for f in validated.__dataclass_fields__})


def enqueue(app: App, wanted: Request, *, delay: timedelta | None = None, at: datetime | None = None,
            after: int | None = None, key: str | None = None) -> Enqueued:
    """Queue the task in a transaction of its own; a taken key gives the existing job (see `submit`)."""
    from . import submit

    def write() -> Enqueued:
        with app.engine.begin() as conn:
            return submit(conn, wanted.task, args=wanted.args, delay=delay, at=at, after=after, key=key)

    return _db(app, write, "enqueuing the job")


def work(app: App, *, max_jobs: int | None, max_seconds: float, batch_size: int) -> WorkReport:
    """Run the due queued jobs, then return what happened (a signal ends it early: report.signal)."""
    from .worker import work as drain

    return _db(app, lambda: drain(app.engine, retry=app.config.retry, max_jobs=max_jobs, max_seconds=max_seconds,
                                  batch_size=batch_size), "working the queue")


def status_filter(status: str | None) -> str | None:
    """A status to list by, checked before anything else is read (UsageError when unknown)."""
    from .models import STATUSES

    if status is not None and status not in STATUSES:
        raise UsageError(f"--status: must be one of {', '.join(STATUSES)}")
    return status


def listing(app: App, status: str | None, limit: int) -> list[dict[str, Any]]:
    """Queued jobs newest first, as stored."""
    from . import store

    return [dict(r) for r in _db(app, lambda: store.listing(app.engine, status, limit), "reading the queue")]


def as_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored row for people and JSON: its arguments and retry delays decoded, its times in ISO 8601."""
    from . import store

    return store.as_dict(row)


def show(app: App, job_id: int) -> dict[str, Any]:
    """One queued job, every field (UsageError when there is none)."""
    from . import store

    row = _db(app, lambda: store.get(app.engine, job_id), "reading the queue")
    if row is None:
        raise UsageError(f"no queued job {job_id}")
    return store.as_dict(row)


def retry(app: App, job_id: int) -> str:
    """A failed or cancelled job gets its attempts back; returns its status now."""
    from . import store

    return _db(app, lambda: store.retry(app.engine, job_id), "retrying the job")


def cancel(app: App, job_id: int) -> int:
    """Cancel a waiting job and its continuations; returns how many were cancelled."""
    from . import store

    return _db(app, lambda: store.cancel(app.engine, job_id), "cancelling the job")


@dataclass(frozen=True)
class Pruned:
    deleted: int
    signum: int | None  # the SIGTERM/SIGINT that stopped it between two batches


def prune(app: App, older_than: timedelta, *, batch_size: int) -> Pruned:
    """Delete finished jobs past their age, in transactions of at most batch_size rows; a SIGTERM or
    SIGINT stops it between two of them."""
    from .. import signals
    from . import store

    with signals.graceful_stop() as stop:
        n, stopped = _db(app, lambda: store.prune(app.engine, older_than, batch_size=batch_size, stop=stop),
                         "pruning the queue")
    return Pruned(n, stop.signum if stopped else None)
