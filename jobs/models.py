"""The tool's own tables (Core, no ORM: every statement is explicit and cheap to import)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeDecorator

from .due import SCHEMA_VERSION  # noqa: F401 - defined import-light there for the quick path


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in Python, naive UTC in every database (one meaning on SQLite, MariaDB, PostgreSQL)."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        from .db import family

        if family(dialect.name) == "mysql":
            from sqlalchemy.dialects.mysql import DATETIME

            return dialect.type_descriptor(DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


metadata = MetaData()

executions = Table(
    "recurring_job_executions",
    metadata,
    Column("job_name", String(128), primary_key=True),
    Column("last_executed_at", UTCDateTime, doc="start of the latest run, whatever its outcome"),
    Column("next_scheduled_at", UTCDateTime, doc="when the job is next owed a run (schedule or retry)"),
    Column("last_executed_by", String(255)),
    Column("last_status", String(16)),
    Column("last_run_id", Integer),
    Column("last_finished_at", UTCDateTime),
    Column("last_duration_seconds", Float),
    Column("last_error", Text),
    Column("last_success_at", UTCDateTime, doc="finish of the latest successful run"),
    Column("schedule_slot_at", UTCDateTime, doc="the schedule slot the latest success fulfilled, or the latest "
                                               "slot a catch_up = \"none\" tick skipped"),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("next_retry_at", UTCDateTime),
    Column("paused", Boolean, nullable=False, default=False),
    Column("paused_at", UTCDateTime),
    Column("paused_by", String(255)),
    Column("first_seen_at", UTCDateTime, doc="when the database first knew the job: a job that never succeeded "
                                              "is overdue once its first slot after this plus grace has passed"),
    Column("missed_slots", Integer, nullable=False, default=0,
           doc="schedule slots skipped so far without a run under catch_up = \"none\" (the slots one catch-up "
               "run stands for under \"one\" are caught up, not counted); the counter behind "
               "cronwarden_job_missed_slots_total"),
    Column("owed_run_at", UTCDateTime, doc="when a tick found the job running and asked for one more run "
                                          "(overlap = \"buffer_one\"); cleared when that run starts"),
    Column("last_failure_at", UTCDateTime, doc="finish of the latest failed run, kept whatever the history keeps"),
    Column("last_failure_error", Text, doc="the error of the latest failed run"),
)

runs = Table(
    "job_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_name", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("trigger", String(16), nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("duration_seconds", Float),
    Column("items", Integer, nullable=False, default=0),
    Column("counts", Text, doc="JSON object of the run's counters"),
    Column("error", Text),
    Index("ix_job_runs_job_started", "job_name", "started_at"),
    Index("ix_job_runs_started", "started_at"),
)

leases = Table(
    "job_leases",
    metadata,
    Column("job_name", String(128), primary_key=True),
    Column("lock_until", UTCDateTime, nullable=False),
    Column("locked_at", UTCDateTime, nullable=False),
    Column("locked_by", String(255), nullable=False),
    Column("token", String(64), nullable=False),
)

slots = Table(
    "job_slots",
    metadata,
    Column("job_name", String(128), primary_key=True),
    Column("slot_at", UTCDateTime, primary_key=True, doc="the schedule slot a scheduled run serves"),
    Column("run_id", Integer, nullable=False, doc="the run that claimed it (job_runs.id)"),
    Column("claimed_at", UTCDateTime, nullable=False),
)
"""One row per (job, slot) claimed by a scheduled run that has not failed: the primary key is the fence that
refuses a second run of the same slot whatever the locks believe (jobs.slots)."""

schema_version = Table(
    "cronwarden_schema",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", Integer, nullable=False),
)
