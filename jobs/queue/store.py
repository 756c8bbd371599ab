"""Queue rows: insertion, claiming, and every state transition, each a short explicit statement.

States: scheduled/enqueued (waiting for run_at) → running (claimed) →
succeeded | scheduled (a retry after its delay) | failed (attempts spent).
awaiting → enqueued when the parent succeeds; → cancelled when it fails for
good or is cancelled (transitively). A claim is an attempt; a running row
whose claimed_until has passed belonged to a worker that died and is taken
back (enqueued again, or failed when its attempts are spent).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Iterable

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from .. import clock
from ..db import family, insert_many
from ..errors import UsageError
from ..models import runs
from .models import (
    AWAITING,
    CANCELLED,
    ENQUEUED,
    FAILED,
    FINISHED,
    RUNNING,
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


def _dialect(conn: "Connection") -> str:
    return family(conn.dialect.name)


def _for_update(query, conn: "Connection", *, skip_locked: bool = False):  # noqa: ANN001, ANN202
    """Row locks where the database has them; SQLite's BEGIN IMMEDIATE already serializes writers."""
    if _dialect(conn) == "sqlite":
        return query
    return query.with_for_update(skip_locked=skip_locked)


def _among(column, values: list[int], conn: "Connection"):  # noqa: ANN001, ANN202
    """`column IN (...)`; on PostgreSQL `column = ANY(array)`, one SQL text whatever the count.

    An expanded IN list is rendered anew for every length (SQLAlchemy's post-compile step and psycopg's
    query conversion run per execution); the array form is compiled and prepared once per worker.
    """
    if _dialect(conn) == "postgresql":
        from sqlalchemy import any_, bindparam
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(values)


def insert_row(conn: "Connection", task: "TaskSpec", args_json: str, *, delay: timedelta | None,
               at: datetime | None, after: int | None, key: str | None) -> int:
    now = clock.utcnow()
    run_at = at if at is not None else now + (delay or timedelta(0))
    status = SCHEDULED if run_at > now else ENQUEUED
    if after is not None:
        parent = conn.execute(_for_update(select(q.c.status).where(q.c.id == after), conn)).first()
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
    return int(conn.execute(insert(q).values(**values)).inserted_primary_key[0])


@dataclass(frozen=True)
class Enqueued:
    """What an enqueue did: a new row, or the row that already held the key (and whether it matches)."""

    id: int
    existing: bool = False
    existing_job: str | None = None
    same_arguments: bool = True


def add(conn: "Connection", task: "TaskSpec", args_json: str, *, delay: timedelta | None,
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


def _keyed(conn: "Connection", key: str, task: "TaskSpec", args_json: str) -> Enqueued | None:
    row = conn.execute(select(q.c.id, q.c.job_name, q.c.args).where(q.c.idempotency_key == key)).first()
    if row is None:
        return None
    same = row.job_name == task.name and json.loads(row.args) == json.loads(args_json)
    return Enqueued(int(row.id), existing=True, existing_job=row.job_name, same_arguments=same)


@dataclass
class Claimed:
    id: int
    job_name: str
    args: str
    attempts: int
    max_attempts: int
    retry_delays: list[float]
    parent_id: int | None
    token: str
    claimed_at: datetime
    started_at: datetime


def claim(engine: "Engine", token: str, limit: int, ttl_for: "dict[str, timedelta]",
          default_ttl: timedelta) -> list[Claimed]:
    """Claim up to `limit` due rows in one transaction (SKIP LOCKED where the database has it)."""
    return record_and_claim(engine, [], "", 0, token, limit, ttl_for, default_ttl)[1]


def record_and_claim(engine: "Engine", outcomes: "list[Outcome]", host: str, pid: int, token: str, limit: int,
                     ttl_for: "dict[str, timedelta]", default_ttl: timedelta
                     ) -> "tuple[dict[int, str | None], list[Claimed]]":
    """Record the last batch's outcomes and claim the next batch: one commit for both."""
    with engine.begin() as conn:
        _bookkeeping(conn)
        now = clock.utcnow()
        statuses = _record(conn, outcomes, host, pid, now) if outcomes else {}
        return statuses, (_claim(conn, token, limit, ttl_for, default_ttl, now) if limit > 0 else [])


def _bookkeeping(conn: "Connection") -> None:
    """The queue's own bookkeeping commits without waiting for the disk flush on PostgreSQL.

    A server crash can lose the last fraction of a second of claims and
    outcomes, never a task's own writes: the jobs concerned run again (tasks
    are idempotent), exactly as if their worker had died.
    """
    if _dialect(conn) == "postgresql":
        conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")


def _claim(conn: "Connection", token: str, limit: int, ttl_for: "dict[str, timedelta]", default_ttl: timedelta,
           now: datetime) -> list[Claimed]:
    """Claim due rows: scheduled ones whose time has come (delays, retries) first, then enqueued ones.

    One index range scan per status on (status, run_at, id), stopping at the
    limit, however long the backlog. The selected rows are locked (FOR UPDATE)
    or the database is (SQLite's BEGIN IMMEDIATE), so the UPDATE names them by
    primary key only: a status condition there lets a planner with stale
    statistics scan the whole status index. Each row gets the longest claim among the
    batch's tasks, so a row whose outcome waits for a later commit stays
    claimed while the rest of the batch runs.
    """
    rows: list[Any] = []
    for status in (SCHEDULED, ENQUEUED):
        if len(rows) >= limit:
            break
        query = (select(q.c.id, q.c.job_name, q.c.args, q.c.attempts, q.c.max_attempts, q.c.retry_delays,
                        q.c.parent_id)
                 .where(q.c.status == status, q.c.run_at <= now)
                 .order_by(q.c.run_at, q.c.id).limit(limit - len(rows)))
        rows += conn.execute(_for_update(query, conn, skip_locked=True)).all()
    if not rows:
        return []
    ttl = max(ttl_for.get(row.job_name, default_ttl) for row in rows)
    ids = [row.id for row in rows]
    guard = _among(q.c.id, ids, conn)
    if _dialect(conn) == "sqlite":
        guard = guard & q.c.status.in_(WAITING)
    done = conn.execute(
        update(q).where(guard)
        .values(status=RUNNING, attempts=q.c.attempts + 1, claimed_by=token, claimed_until=now + ttl,
                started_at=now, finished_at=None)
    ).rowcount
    claimed_ids = set(ids)
    if done != len(ids):
        claimed_ids = {r.id for r in conn.execute(
            select(q.c.id).where(_among(q.c.id, ids, conn), q.c.claimed_by == token, q.c.status == RUNNING))}
    delays: dict[str, list[float]] = {}
    for _, _, _, _, _, text, _ in rows:
        if text not in delays:
            delays[text] = json.loads(text)
    return [Claimed(id_, name, args, attempts + 1, max_attempts, delays[text], parent, token, now, now)
            for id_, name, args, attempts, max_attempts, text, parent in rows if id_ in claimed_ids]


def verify_claim(conn: "Connection", job_id: int, token: str) -> bool:
    """Inside the task's transaction: is the row still ours? (It stays locked until the commit.)"""
    query = _for_update(select(q.c.claimed_by, q.c.status).where(q.c.id == job_id), conn)
    row = conn.execute(query).first()
    return row is not None and row.claimed_by == token and row.status == RUNNING


def renew(engine: "Engine", jobs: list[Claimed], until: datetime) -> set[int]:
    """Extend the claims of a batch's jobs not yet started; returns the ids still ours."""
    if not jobs:
        return set()
    token = jobs[0].token
    ids = [j.id for j in jobs]
    with engine.begin() as conn:
        conn.execute(update(q).where(_among(q.c.id, ids, conn), q.c.claimed_by == token, q.c.status == RUNNING)
                     .values(claimed_until=until))
        return {r.id for r in conn.execute(
            select(q.c.id).where(_among(q.c.id, ids, conn), q.c.claimed_by == token, q.c.status == RUNNING))}


def reclaim_expired(engine: "Engine", host: str, pid: int) -> list[int]:
    """Running rows whose claim has passed: their worker died. Enqueue them again, or fail them when spent."""
    with engine.begin() as conn:
        now = clock.utcnow()
        query = select(q.c.id, q.c.job_name, q.c.attempts, q.c.max_attempts, q.c.claimed_by, q.c.started_at).where(
            q.c.status == RUNNING, q.c.claimed_until < now).limit(100)
        rows = conn.execute(_for_update(query, conn, skip_locked=True)).all()
        for row in rows:
            error = f"abandoned: worker {row.claimed_by} stopped answering (claim expired)"
            spent = row.attempts >= row.max_attempts
            conn.execute(update(q).where(q.c.id == row.id, q.c.status == RUNNING).values(
                status=FAILED if spent else ENQUEUED, run_at=now, claimed_by=None, claimed_until=None,
                last_error=error, finished_at=now if spent else None))
            conn.execute(insert(runs).values(
                job_name=row.job_name, status="abandoned", trigger=TRIGGER, host=host, pid=pid,
                started_at=row.started_at or now, finished_at=now, items=0,
                counts=json.dumps({"queue_id": row.id, "attempt": row.attempts}), error=error))
            if spent:
                cancel_children(conn, row.id, now)
    return [r.id for r in rows]


@dataclass
class Outcome:
    """How one claimed job's attempt ended, waiting to be recorded with the others of its batch."""

    job: Claimed
    status: str
    counts: dict[str, int]
    finished_at: datetime
    error: str | None = None
    permanent: bool = False


def _history_row(o: Outcome, status: str, host: str, pid: int) -> dict[str, Any]:
    job = o.job
    record = {"queue_id": job.id, "attempt": job.attempts, **o.counts}
    return dict(job_name=job.job_name, status=status, trigger=TRIGGER, host=host, pid=pid, started_at=job.started_at,
                finished_at=o.finished_at, duration_seconds=(o.finished_at - job.started_at).total_seconds(),
                items=sum(o.counts.values()), counts=json.dumps(record, sort_keys=True), error=o.error)


def _ours(job: Claimed):  # noqa: ANN202
    return (q.c.id == job.id) & (q.c.claimed_by == job.token) & (q.c.status == RUNNING)


def record(engine: "Engine", outcomes: list[Outcome], host: str, pid: int) -> dict[int, str | None]:
    """Record a batch of outcomes in one transaction; returns each job's new status (None: the claim was lost).

    A success releases the job's continuations; a failure schedules the next
    attempt after its delay, or fails the job for good and cancels its continuations.
    One commit per batch, not per job: a commit costs a disk flush.
    """
    if not outcomes:
        return {}
    with engine.begin() as conn:
        _bookkeeping(conn)
        return _record(conn, outcomes, host, pid, clock.utcnow())


def _record(conn: "Connection", outcomes: list[Outcome], host: str, pid: int, now: datetime) -> dict[int, str | None]:
    token = outcomes[0].job.token
    done = [o.job.id for o in outcomes if o.status == "succeeded"]
    others = [o.job.id for o in outcomes if o.status != "succeeded"]
    succeed = update(q).values(status=SUCCEEDED, finished_at=now, claimed_by=None, claimed_until=None,
                               last_error=None)
    if conn.dialect.update_returning:
        # The successes still ours are marked and named by one statement; only failures need a look first.
        ours = set(conn.execute(succeed.where(_among(q.c.id, done, conn), q.c.claimed_by == token,
                                              q.c.status == RUNNING).returning(q.c.id)).scalars()) if done else set()
        ours |= _still_ours(conn, others, token)
        succeeded = [i for i in done if i in ours]
    else:
        ours = _still_ours(conn, done + others, token)
        succeeded = [i for i in done if i in ours]
        if succeeded:
            conn.execute(succeed.where(_among(q.c.id, succeeded, conn), q.c.claimed_by == token))
    result: dict[int, str | None] = dict.fromkeys(succeeded, SUCCEEDED)
    if succeeded:
        conn.execute(update(q).where(_among(q.c.parent_id, succeeded, conn), q.c.status == AWAITING).values(
            status=case((q.c.run_at > now, SCHEDULED), else_=ENQUEUED)))
    history = []
    for o in outcomes:
        job = o.job
        if job.id not in ours:
            # Lost like a recurring job's lock: the live worker records `failed`; `abandoned` is the row
            # reclaim_expired writes for a worker that died.
            result[job.id] = None
            history.append(_history_row(o, "failed", host, pid) | {
                "error": o.error or "the claim was lost before the outcome was recorded"})
            continue
        history.append(_history_row(o, o.status, host, pid))
        if o.status == "succeeded":
            continue
        spent = o.permanent or job.attempts >= job.max_attempts
        if spent:
            values: dict[str, Any] = dict(status=FAILED, finished_at=now)
        else:
            delays = job.retry_delays or [0]
            wait = delays[min(job.attempts - 1, len(delays) - 1)]
            values = dict(status=SCHEDULED, run_at=now + timedelta(seconds=wait))
        conn.execute(update(q).where(_ours(job)).values(claimed_by=None, claimed_until=None, last_error=o.error,
                                                        **values))
        result[job.id] = values["status"]
        if spent:
            cancel_children(conn, job.id, now)
    insert_many(conn, runs, history)
    return result


def _still_ours(conn: "Connection", ids: list[int], token: str) -> set[int]:
    """Which of these rows are still claimed by us, locked until the commit."""
    if not ids:
        return set()
    return set(conn.execute(_for_update(
        select(q.c.id).where(_among(q.c.id, ids, conn), q.c.claimed_by == token, q.c.status == RUNNING), conn)
    ).scalars())


def release(engine: "Engine", jobs: Iterable[Claimed], host: str, pid: int, *, error: str | None = None,
            record: bool = False) -> int:
    """Give claimed rows back without consuming an attempt (a stop request, a claim never started)."""
    jobs = list(jobs)
    if not jobs:
        return 0
    released = 0
    with engine.begin() as conn:
        now = clock.utcnow()
        for job in jobs:
            released += conn.execute(update(q).where(_ours(job)).values(
                status=ENQUEUED, attempts=q.c.attempts - 1, claimed_by=None, claimed_until=None,
                started_at=None)).rowcount
            if record:
                conn.execute(insert(runs).values(**_history_row(Outcome(job, "interrupted", {}, now, error),
                                                                "interrupted", host, pid)))
    return released


def cancel_children(conn: "Connection", parent_id: int, now: datetime) -> int:
    """Continuations of a job that will never succeed are cancelled, transitively."""
    cancelled = 0
    frontier = [parent_id]
    while frontier:
        children = [r.id for r in conn.execute(
            select(q.c.id).where(_among(q.c.parent_id, frontier, conn), q.c.status == AWAITING))]
        if children:
            cancelled += conn.execute(update(q).where(_among(q.c.id, children, conn), q.c.status == AWAITING).values(
                status=CANCELLED, finished_at=now,
                last_error=f"cancelled: parent {parent_id} (or its ancestor) did not succeed")).rowcount
        frontier = children
    return cancelled


def cancel(engine: "Engine", job_id: int) -> int:
    """Cancel a waiting job and its continuations; returns how many rows were cancelled."""
    with engine.begin() as conn:
        row = conn.execute(_for_update(select(q.c.status).where(q.c.id == job_id), conn)).first()
        if row is None:
            raise UsageError(f"no queued job {job_id}")
        if row.status not in (SCHEDULED, ENQUEUED, AWAITING):
            raise UsageError(f"job {job_id} is {row.status}: only scheduled, enqueued or awaiting jobs can be "
                             f"cancelled")
        now = clock.utcnow()
        conn.execute(update(q).where(q.c.id == job_id).values(status=CANCELLED, finished_at=now,
                                                              last_error="cancelled by an operator"))
        return 1 + cancel_children(conn, job_id, now)


def retry(engine: "Engine", job_id: int) -> str:
    """A failed or cancelled job gets its attempts back; it waits again if its parent has not succeeded."""
    with engine.begin() as conn:
        row = conn.execute(_for_update(select(q.c.status, q.c.parent_id).where(q.c.id == job_id), conn)).first()
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


def prune(engine: "Engine", older_than: timedelta, *, batch_size: int = 10_000,
          stop: "StopFlag | None" = None) -> tuple[int, bool]:
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


def get(engine: "Engine", job_id: int) -> "RowMapping | None":
    with engine.connect() as conn:
        return conn.execute(select(q).where(q.c.id == job_id)).mappings().first()


def listing(engine: "Engine", status: str | None, limit: int) -> list["RowMapping"]:
    query = select(q).order_by(q.c.id.desc()).limit(limit)
    if status is not None:
        query = query.where(q.c.status == status)
    with engine.connect() as conn:
        return list(conn.execute(query).mappings().all())


def depth(engine: "Engine") -> dict[str, Any]:
    with engine.connect() as conn:
        now = clock.utcnow()
        counts = dict(conn.execute(select(q.c.status, func.count()).group_by(q.c.status)).all())
        oldest = conn.execute(select(func.min(q.c.run_at)).where(q.c.status.in_(WAITING), q.c.run_at <= now)).scalar()
    if isinstance(oldest, str):
        oldest = datetime.fromisoformat(oldest)
    if oldest is not None and oldest.tzinfo is None:
        from datetime import timezone

        oldest = oldest.replace(tzinfo=timezone.utc)
    return {"counts": {s: int(counts.get(s, 0)) for s in STATUSES},
            "oldest_due_seconds": None if oldest is None else max(0.0, (now - oldest).total_seconds())}


def as_dict(row: "RowMapping") -> dict[str, Any]:
    out = dict(row)
    out["args"] = json.loads(row["args"])
    out["retry_delays"] = json.loads(row["retry_delays"])
    for key, value in out.items():
        if isinstance(value, datetime):
            out[key] = value.isoformat()
    return out
