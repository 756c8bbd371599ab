"""The queue table: `db upgrade` creates it as step 2 of the tool's schema (jobs.migrations), which the queue
registers with the core as an extension (jobs.queue.extension), so the core never imports the queue."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Column, Index, Integer, MetaData, String, Table, Text, text

from ..models import UTCDateTime

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

SCHEDULED = "scheduled"
ENQUEUED = "enqueued"
AWAITING = "awaiting"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
STATUSES = (SCHEDULED, ENQUEUED, AWAITING, RUNNING, SUCCEEDED, FAILED, CANCELLED)
WAITING = (SCHEDULED, ENQUEUED)
FINISHED = (SUCCEEDED, FAILED, CANCELLED)

metadata = MetaData()

queued_jobs = Table(
    "queued_jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_name", String(128), nullable=False),
    Column("args", Text, nullable=False, doc="JSON object of the validated arguments"),
    Column("status", String(16), nullable=False),
    Column("run_at", UTCDateTime, nullable=False, doc="not claimed before this time"),
    Column("attempts", Integer, nullable=False, default=0, doc="claims so far (a claim is an attempt)"),
    Column("max_attempts", Integer, nullable=False),
    Column("retry_delays", Text, nullable=False, doc="JSON list of seconds before attempt 2, 3, ..."),
    Column("parent_id", Integer, doc="a continuation waits for this job to succeed"),
    Column("idempotency_key", String(255), doc="unique when given (NULLs never collide)"),
    Column("last_error", Text),
    Column("claimed_by", String(255), doc="worker token of the current claim"),
    Column("claimed_until", UTCDateTime, doc="a running row past this is reclaimed: its worker died"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    # Partial on PostgreSQL and SQLite (MariaDB indexes every row): a claimed or
    # finished row leaves these indexes, so a job's two updates write one index
    # entry each (the primary key's) instead of four.
    Index("ix_queued_jobs_due", "status", "run_at", "id",
          postgresql_where=text("status IN ('scheduled', 'enqueued')"),
          sqlite_where=text("status IN ('scheduled', 'enqueued')")),
    Index("ix_queued_jobs_parent", "parent_id",
          postgresql_where=text("parent_id IS NOT NULL"), sqlite_where=text("parent_id IS NOT NULL")),
    Index("ux_queued_jobs_key", "idempotency_key", unique=True,
          postgresql_where=text("idempotency_key IS NOT NULL"), sqlite_where=text("idempotency_key IS NOT NULL")),
)


def create_table(conn: Connection) -> list[str]:
    from ..ddl import create_tables

    return create_tables(conn, queued_jobs)


def create(engine: Engine) -> None:
    """Create the queue table if it is missing (outside `db upgrade`: the queue's own tests)."""
    queued_jobs.create(engine, checkfirst=True)

