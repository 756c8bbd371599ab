"""Claims and outcomes: the worker's side of the queue's state transitions.

A claim is an attempt: due rows become `running` with this worker's token and a
claimed_until. Outcomes are recorded a batch per transaction, only on rows still
claimed by the same token; a running row whose claim has passed belonged to a
worker that died and is taken back. The states themselves are told in store.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import case, insert, select, update

from .. import clock
from ..db import insert_many
from ..models import runs
from .models import AWAITING, ENQUEUED, FAILED, RUNNING, SCHEDULED, SUCCEEDED, WAITING
from .store import TRIGGER, among, cancel_children, dialect, for_update, q

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine


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


def claim(engine: Engine, token: str, limit: int, ttl_for: dict[str, timedelta],
          default_ttl: timedelta) -> list[Claimed]:
    """Claim up to `limit` due rows in one transaction (SKIP LOCKED where the database has it)."""
    return record_and_claim(engine, [], "", 0, token, limit, ttl_for, default_ttl)[1]


def record_and_claim(engine: Engine, outcomes: list[Outcome], host: str, pid: int, token: str, limit: int,
                     ttl_for: dict[str, timedelta], default_ttl: timedelta
                     ) -> tuple[dict[int, str | None], list[Claimed]]:
    """Record the last batch's outcomes and claim the next batch: one commit for both."""
    with engine.begin() as conn:
        _bookkeeping(conn)
        now = clock.utcnow()
        statuses = _record(conn, outcomes, host, pid, now) if outcomes else {}
        return statuses, (_claim(conn, token, limit, ttl_for, default_ttl, now) if limit > 0 else [])


def _bookkeeping(conn: Connection) -> None:
    """The queue's own bookkeeping commits without waiting for the disk flush on PostgreSQL.

    A server crash can lose the last fraction of a second of claims and
    outcomes, never a task's own writes: the jobs concerned run again (tasks
    are idempotent), exactly as if their worker had died.
    """
    if dialect(conn) == "postgresql":
        conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")


def _claim(conn: Connection, token: str, limit: int, ttl_for: dict[str, timedelta], default_ttl: timedelta,
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
        rows += conn.execute(for_update(query, conn, skip_locked=True)).all()
    if not rows:
        return []
    ttl = max(ttl_for.get(row.job_name, default_ttl) for row in rows)
    ids = [row.id for row in rows]
    guard = among(q.c.id, ids, conn)
    if dialect(conn) == "sqlite":
        guard = guard & q.c.status.in_(WAITING)
    done = conn.execute(
        update(q).where(guard)
        .values(status=RUNNING, attempts=q.c.attempts + 1, claimed_by=token, claimed_until=now + ttl,
                started_at=now, finished_at=None)
    ).rowcount
    claimed_ids = set(ids)
    if done != len(ids):
        claimed_ids = {r.id for r in conn.execute(
            select(q.c.id).where(among(q.c.id, ids, conn), q.c.claimed_by == token, q.c.status == RUNNING))}
    delays: dict[str, list[float]] = {}
    for _, _, _, _, _, text, _ in rows:
        if text not in delays:
            delays[text] = json.loads(text)
    return [Claimed(id_, name, args, attempts + 1, max_attempts, delays[text], parent, token, now, now)
            for id_, name, args, attempts, max_attempts, text, parent in rows if id_ in claimed_ids]


def verify_claim(conn: Connection, job_id: int, token: str) -> bool:
    """Inside the task's transaction: is the row still ours? (It stays locked until the commit.)"""
    query = for_update(select(q.c.claimed_by, q.c.status).where(q.c.id == job_id), conn)
    row = conn.execute(query).first()
    return row is not None and row.claimed_by == token and row.status == RUNNING


def renew(engine: Engine, jobs: list[Claimed], until: datetime) -> set[int]:
    """Extend the claims of a batch's jobs not yet started; returns the ids still ours."""
    if not jobs:
        return set()
    token = jobs[0].token
    ids = [j.id for j in jobs]
    with engine.begin() as conn:
        conn.execute(update(q).where(among(q.c.id, ids, conn), q.c.claimed_by == token, q.c.status == RUNNING)
                     .values(claimed_until=until))
        return {r.id for r in conn.execute(
            select(q.c.id).where(among(q.c.id, ids, conn), q.c.claimed_by == token, q.c.status == RUNNING))}


def reclaim_expired(engine: Engine, host: str, pid: int) -> list[int]:
    """Running rows whose claim has passed: their worker died. Enqueue them again, or fail them when spent."""
    with engine.begin() as conn:
        now = clock.utcnow()
        query = select(q.c.id, q.c.job_name, q.c.attempts, q.c.max_attempts, q.c.claimed_by, q.c.started_at).where(
            q.c.status == RUNNING, q.c.claimed_until < now).limit(100)
        rows = conn.execute(for_update(query, conn, skip_locked=True)).all()
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


def _ours(job: Claimed):
    return (q.c.id == job.id) & (q.c.claimed_by == job.token) & (q.c.status == RUNNING)


def record(engine: Engine, outcomes: list[Outcome], host: str, pid: int) -> dict[int, str | None]:
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


def _record(conn: Connection, outcomes: list[Outcome], host: str, pid: int, now: datetime) -> dict[int, str | None]:
    token = outcomes[0].job.token
    done = [o.job.id for o in outcomes if o.status == "succeeded"]
    others = [o.job.id for o in outcomes if o.status != "succeeded"]
    succeed = update(q).values(status=SUCCEEDED, finished_at=now, claimed_by=None, claimed_until=None,
                               last_error=None)
    if conn.dialect.update_returning:
        # The successes still ours are marked and named by one statement; only failures need a look first.
        ours = set(conn.execute(succeed.where(among(q.c.id, done, conn), q.c.claimed_by == token,
                                              q.c.status == RUNNING).returning(q.c.id)).scalars()) if done else set()
        ours |= _still_ours(conn, others, token)
        succeeded = [i for i in done if i in ours]
    else:
        ours = _still_ours(conn, done + others, token)
        succeeded = [i for i in done if i in ours]
        if succeeded:
            conn.execute(succeed.where(among(q.c.id, succeeded, conn), q.c.claimed_by == token))
    result: dict[int, str | None] = dict.fromkeys(succeeded, SUCCEEDED)
    if succeeded:
        conn.execute(update(q).where(among(q.c.parent_id, succeeded, conn), q.c.status == AWAITING).values(
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


def _still_ours(conn: Connection, ids: list[int], token: str) -> set[int]:
    """Which of these rows are still claimed by us, locked until the commit."""
    if not ids:
        return set()
    return set(conn.execute(for_update(
        select(q.c.id).where(among(q.c.id, ids, conn), q.c.claimed_by == token, q.c.status == RUNNING), conn)
    ).scalars())


def release(engine: Engine, jobs: Iterable[Claimed], host: str, pid: int, *, error: str | None = None,
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
