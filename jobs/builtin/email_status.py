"""The email queue as an operator sees it: how many emails wait or failed, which, and sending one again.

The `email-queue` job never deletes a row and marks an email `failed` for good after a 5xx reply or
max_attempts; its run still succeeds. These reads and the one write (a failed row back to `pending`)
are what make such emails visible (metrics, `check`) and recoverable (`cronwarden emails`).

A row's last attempt is its `claimed_at` (every attempt claims the row; outcomes leave it in place),
or `created_at` for a row the application marked failed itself without an attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update

from .email_rows import queue_table

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine, RowMapping

STATUSES = ("pending", "sending", "sent", "failed")
WAITING = ("pending", "sending", "failed")


@dataclass(frozen=True)
class Backlog:
    """Emails per status (sent rows are not counted: the table keeps them all) and the oldest waiting."""

    counts: dict[str, int]
    oldest_pending_seconds: float | None


@dataclass(frozen=True)
class RecentFailures:
    count: int
    newest_attempt_at: datetime | None
    newest_error: str | None


def exists(engine: Engine, table: str) -> bool:
    """Whether the queue table is there (a deployment without it has nothing to report)."""
    from sqlalchemy import inspect

    schema, _, bare = table.rpartition(".")
    return inspect(engine).has_table(bare, schema=schema or None)


def _last_attempt(q: Any):  # a SQL expression
    return func.coalesce(q.c.claimed_at, q.c.created_at)


def backlog(engine: Engine, table: str, now: datetime) -> Backlog:
    """Pending, sending and failed counts (through the status index) and the age of the oldest unsent email."""
    q = queue_table(table)
    with engine.connect() as conn:
        counts: dict[str, int] = dict(conn.execute(select(q.c.status, func.count()).where(q.c.status.in_(WAITING))
                                   .group_by(q.c.status)).all())
        oldest = conn.execute(select(func.min(q.c.created_at))
                              .where(q.c.status.in_(("pending", "sending")))).scalar()
    age = None if oldest is None else max((now - oldest).total_seconds(), 0.0)
    return Backlog({status: int(counts.get(status, 0)) for status in WAITING}, age)


def recent_failures(engine: Engine, table: str, since: datetime) -> RecentFailures:
    """Failed emails whose last attempt is at or after `since`."""
    q = queue_table(table)
    last = _last_attempt(q)
    recent = (q.c.status == "failed") & (last >= since)
    with engine.connect() as conn:
        count, newest = conn.execute(select(func.count(), func.max(last)).where(recent)).one()
        error = conn.execute(select(q.c.last_error).where(recent).order_by(last.desc(), q.c.id.desc())
                             .limit(1)).scalar() if count else None
    return RecentFailures(int(count), newest, error)


def listing(engine: Engine, table: str, status: str | None, limit: int) -> list[RowMapping]:
    """Emails newest first (without their bodies)."""
    q = queue_table(table)
    query = select(q.c.id, q.c.to_address, q.c.subject, q.c.status, q.c.attempts, q.c.created_at,
                   _last_attempt(q).label("last_attempt_at"), q.c.next_attempt_at, q.c.sent_at,
                   q.c.last_error).order_by(q.c.id.desc()).limit(limit)
    if status is not None:
        query = query.where(q.c.status == status)
    with engine.connect() as conn:
        return list(conn.execute(query).mappings().all())


def status_of(engine: Engine, table: str, email_id: int) -> str | None:
    q = queue_table(table)
    with engine.connect() as conn:
        return conn.execute(select(q.c.status).where(q.c.id == email_id)).scalar()


def send_again(engine: Engine, table: str, email_id: int | None) -> int:
    """Failed emails (one, or all with email_id None) back to `pending` with their attempts reset.

    The next email-queue run sends them; last_error keeps why they failed until then. Only `failed` rows
    change, in one statement, so an email that a run is sending or has sent is never touched.
    """
    q = queue_table(table)
    query = update(q).where(q.c.status == "failed")
    if email_id is not None:
        query = query.where(q.c.id == email_id)
    with engine.begin() as conn:
        return conn.execute(query.values(status="pending", attempts=0, next_attempt_at=None, claimed_by=None,
                                         claimed_at=None)).rowcount


def as_dict(row: Any) -> dict[str, Any]:
    return {key: (value.isoformat() if isinstance(value, datetime) else value) for key, value in dict(row).items()}


def email_queue(config: Any) -> Any:
    """The email-queue job's JobConfig when it is enabled in the Config (its table is then worth looking at)."""
    job = config.jobs.get("email-queue")
    return job if job is not None and job.enabled else None


def failed_alarm(config: Any, engine: Engine, now: datetime) -> RecentFailures | None:
    """What `check` reports: failed emails whose last attempt is within failed_alert_window, or None when
    the alarm is off (alert_on_failed = false, the job disabled, no table) or nothing failed recently.

    A window rather than a mark stored by the previous check: `check` stays read-only (it works on a
    database it may not write), two monitors see the same answer, and every failure is reported by each
    check that runs within the window after it, until someone sends the email again.
    """
    job = email_queue(config)
    if job is None or not job.settings.alert_on_failed or not exists(engine, job.settings.table):
        return None
    failures = recent_failures(engine, job.settings.table, now - job.settings.failed_alert_window)
    return failures if failures.count else None
