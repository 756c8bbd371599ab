"""Queue rows: insertion and the operators' transitions (cancel, retry, prune), each a short explicit statement.

States: scheduled/enqueued (waiting for run_at) → running (claimed) →
succeeded | scheduled (a retry after its delay) | failed (attempts spent).
awaiting → enqueued when the parent succeeds; → cancelled when it fails for
good or is cancelled (transitively). A claim is an attempt; a running row
whose claimed_until has passed belonged to a worker that died and is taken
back (enqueued again, or failed when its attempts are spent): claiming.py
holds the worker's transitions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from .. import clock
from ..db import family
from ..errors import UsageError
from .models import (
    AWAITING,
    CANCELLED,
    ENQUEUED,
    FAILED,
    FINISHED,
    SCHEDULED,
    STATUSES,
    SUCCEEDED,
    WAITING,
    queued_jobs,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine, RowMapping

    from ..signals import StopFlag
    from . import TaskSpec

q = queued_jobs
TRIGGER = "queued"


def dialect(conn: Connection) -> str:
    """The queue's SQL flavour: 'mysql' for MariaDB too."""
    return family(conn.dialect.name)


def for_update(query: Any, conn: Connection, *, skip_locked: bool = False) -> Any:
    """Row locks where the database has them; SQLite's BEGIN IMMEDIATE already serializes writers."""
    if dialect(conn) == "sqlite":
        return query
    return query.with_for_update(skip_locked=skip_locked)


def among(column: Any, values: list[int], conn: Connection) -> Any:
    """`column IN (...)`; on PostgreSQL `column = ANY(array)`, one SQL text whatever the count.

    An expanded IN list is rendered anew for every length (SQLAlchemy's post-compile step and psycopg's
    query conversion run per execution); the array form is compiled and prepared once per worker.
    """
    if dialect(conn) == "postgresql":
        from sqlalchemy import any_, bindparam
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(values)


def insert_row(conn: Connection, task: TaskSpec, args_json: str, *, delay: timedelta | None,
               at: datetime | None, after: int | None, key: str | None) -> int:
    now = clock.utcnow()
    run_at = at if at is not None else now + (delay or timedelta(0))
    status = SCHEDULED if run_at > now else ENQUEUED
    if after is not None:
        parent = conn.execute(for_update(select(q.c.status).where(q.c.id == after), conn)).first()
        if parent is None:
            raise UsageError(f"no queued job {after} to continue")
        if parent.status in (FAILED, CANCELLED):
            status = CANCELLED
        elif parent.status != SUCCEEDED:
            status = AWAITING
    values = dict(job_name=task.name, args=args_json, status=status, run_at=run_at, attempts=0,
                  max_attempts=task.max_attempts,
                  retry_delays=json.dumps([d.total_seconds() for d in task.retry_delays]),
                  parent_id=after, idempotency_key=key, created_at=now,
                  finished_at=now if status == CANCELLED else None,
                  last_error=f"cancelled: parent {after} did not succeed" if status == CANCELLED else None)
    return int(conn.execute(insert(q).values(**values)).inserted_primary_key[0])  # type: ignore[index]


@dataclass(frozen=True)
class Enqueued:
    """What an enqueue did: a new row, or the row that already held the key (and whether it matches)."""

    id: int
    existing: bool = False
    existing_job: str | None = None
    same_arguments: bool = True


def add(conn: Connection, task: TaskSpec, args_json: str, *, delay: timedelta | None,
        at: datetime | None, after: int | None, key: str | None) -> Enqueued:
    """One row; with a key, the existing row when the key is already taken (even concurrently)."""
    if key is None:
        return Enqueued(insert_row(conn, task, args_json, delay=delay, at=at, after=after, key=None))
    existing = _keyed(conn, key, task, args_json)
    if existing is not None:
        return existing
    try:
        with conn.begin_nested():
            return Enqueued(insert_row(conn, task, args_json, delay=delay, at=at, after=after, key=key))
    except IntegrityError:
        existing = _keyed(conn, key, task, args_json)
        if existing is None:
            raise
        return existing


def _keyed(conn: Connection, key: str, task: TaskSpec, args_json: str) -> Enqueued | None:
    row = conn.execute(select(q.c.id, q.c.job_name, q.c.args).where(q.c.idempotency_key == key)).first()
    if row is None:
        return None
    same = row.job_name == task.name and json.loads(row.args) == json.loads(args_json)
    return Enqueued(int(row.id), existing=True, existing_job=row.job_name, same_arguments=same)


def cancel_children(conn: Connection, parent_id: int, now: datetime) -> int:
    """Continuations of a job that will never succeed are cancelled, transitively."""
    cancelled = 0
    frontier = [parent_id]
    while frontier:
        children = [r.id for r in conn.execute(
            select(q.c.id).where(among(q.c.parent_id, frontier, conn), q.c.status == AWAITING))]
        if children:
            cancelled += conn.execute(update(q).where(among(q.c.id, children, conn), q.c.status == AWAITING).values(
                status=CANCELLED, finished_at=now,
                last_error=f"cancelled: parent {parent_id} (or its ancestor) did not succeed")).rowcount
        frontier = children
    return cancelled


def cancel(engine: Engine, job_id: int) -> int:
    """Cancel a waiting job and its continuations; returns how many rows were cancelled."""
    with engine.begin() as conn:
        row = conn.execute(for_update(select(q.c.status).where(q.c.id == job_id), conn)).first()
        if row is None:
            raise UsageError(f"no queued job {job_id}")
        if row.status not in (SCHEDULED, ENQUEUED, AWAITING):
            raise UsageError(f"job {job_id} is {row.status}: only scheduled, enqueued or awaiting jobs can be "
                             f"cancelled")
        now = clock.utcnow()
        conn.execute(update(q).where(q.c.id == job_id).values(status=CANCELLED, finished_at=now,
                                                              last_error="cancelled by an operator"))
        return 1 + cancel_children(conn, job_id, now)


def retry(engine: Engine, job_id: int) -> str:
    """A failed or cancelled job gets its attempts back; it waits again if its parent has not succeeded."""
    with engine.begin() as conn:
        row = conn.execute(for_update(select(q.c.status, q.c.parent_id).where(q.c.id == job_id), conn)).first()
        if row is None:
            raise UsageError(f"no queued job {job_id}")
        if row.status not in (FAILED, CANCELLED):
            raise UsageError(f"job {job_id} is {row.status}: only failed or cancelled jobs can be retried")
        status = ENQUEUED
        if row.parent_id is not None:
            parent = conn.execute(select(q.c.status).where(q.c.id == row.parent_id)).scalar()
            if parent in (FAILED, CANCELLED):
                raise UsageError(f"job {job_id} continues job {row.parent_id}, which is {parent}: retry that first")
            if parent is not None and parent != SUCCEEDED:
                status = AWAITING
        conn.execute(update(q).where(q.c.id == job_id).values(
            status=status, attempts=0, run_at=clock.utcnow(), finished_at=None, started_at=None,
            claimed_by=None, claimed_until=None))
    return status


PRUNE_TARGET_SECONDS = (0.1, 0.2)  # a prune batch faster than this lets the next one grow, a slower one shrinks it
PRUNE_FIRST_BATCH = 1_000


def prune(engine: Engine, older_than: timedelta, *, batch_size: int = 10_000,
          stop: StopFlag | None = None) -> tuple[int, bool]:
    """Delete finished rows older than the cutoff (their history stays in job_runs).

    At most batch_size rows per transaction, in id order, sized towards PRUNE_TARGET_SECONDS. Returns
    (rows deleted, whether a stop request ended it early: it is honoured between two batches).
    """
    from ..batches import BatchSize, by_key

    cutoff = clock.utcnow() - older_than
    size = BatchSize(batch_size, PRUNE_FIRST_BATCH, PRUNE_TARGET_SECONDS)
    deleted, last = 0, None
    while stop is None or not stop.requested:
        started = time.perf_counter()
        with engine.begin() as conn:
            n, last = by_key(conn, q, q.c.id, size.rows, last,
                             where=[q.c.status.in_(FINISHED), q.c.finished_at < cutoff])
        deleted += n
        if last is None:
            return deleted, False
        size.after(time.perf_counter() - started)
    return deleted, True


def get(engine: Engine, job_id: int) -> RowMapping | None:
    with engine.connect() as conn:
        return conn.execute(select(q).where(q.c.id == job_id)).mappings().first()


def listing(engine: Engine, status: str | None, limit: int) -> list[RowMapping]:
    query = select(q).order_by(q.c.id.desc()).limit(limit)
    if status is not None:
        query = query.where(q.c.status == status)
    with engine.connect() as conn:
        return list(conn.execute(query).mappings().all())


def depth(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        now = clock.utcnow()
        counts: dict[str, int] = dict(conn.execute(select(q.c.status, func.count()).group_by(q.c.status)).all())
        oldest = conn.execute(select(func.min(q.c.run_at)).where(q.c.status.in_(WAITING), q.c.run_at <= now)).scalar()
    if isinstance(oldest, str):
        oldest = datetime.fromisoformat(oldest)
    if oldest is not None and oldest.tzinfo is None:
        from datetime import timezone

        oldest = oldest.replace(tzinfo=timezone.utc)
    return {"counts": {s: int(counts.get(s, 0)) for s in STATUSES},
            "oldest_due_seconds": None if oldest is None else max(0.0, (now - oldest).total_seconds())}


def as_dict(row: Mapping[Any, Any]) -> dict[str, Any]:
    out = dict(row)
    out["args"] = json.loads(row["args"])
    out["retry_delays"] = json.loads(row["retry_delays"])
    for key, value in out.items():
        if isinstance(value, datetime):
            out[key] = value.isoformat()
    return out
