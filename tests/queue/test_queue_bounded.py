"""The queue's bulk deletions stay within their batch size: erase-user's tokens, `queue prune`."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import time_machine
from sqlalchemy import func, insert, select

from jobs.app_tables import default_metadata
from jobs.queue import enqueue
from jobs.queue import models as qm
from jobs.queue.worker import work
from tests.layouts import RowsPerTransaction, Vanish, fill

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
APP = default_metadata()
users, tokens = APP.tables["users"], APP.tables["refresh_tokens"]


def _count(engine, table, *where) -> int:
    """In autocommit: on SQLite the tool's engine takes the write lock up front, and a poller queueing for
    it behind back-to-back batches (SQLite's busy handler is not fair) may see the prune only once it ended."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar()


@pytest.mark.parametrize("owned", [0, 1, 1000])
def test_erase_user_deletes_the_tokens_at_most_batch_size_per_transaction(engine, owned):
    qm.create(engine)
    with engine.begin() as conn:
        for uid in (1, 2):
            conn.execute(insert(users).values(id=uid, username=f"u{uid}", email=f"u{uid}@example.com",
                                              password_hash="x", is_admin=False, created_at=NOW))
        fill(conn, tokens, owned, user_id=1, token_hash="same", expires_at=NOW, created_at=NOW)
        fill(conn, tokens, 300, user_id=2, token_hash="other", expires_at=NOW, created_at=NOW)
        enqueue(conn, "erase-user", args={"user_id": 1, "batch_size": 50})
    with RowsPerTransaction("refresh_tokens") as watch:
        report = work(engine)
    assert (report.succeeded, report.failed) == (1, 0)
    assert watch.largest <= 50 and sum(watch.committed) == owned
    assert _count(engine, tokens, tokens.c.user_id == 1) == 0 and _count(engine, tokens) == 300
    assert _count(engine, users, users.c.email == "erased-1@invalid") == 1


@pytest.mark.parametrize("at", [1, 2, 3])
def test_erase_user_survives_tokens_the_application_deletes_meanwhile(db_url, engine, at):
    qm.create(engine)
    with engine.begin() as conn:
        conn.execute(insert(users).values(id=1, username="u1", email="u1@example.com", password_hash="x",
                                          is_admin=False, created_at=NOW))
        fill(conn, tokens, 500, user_id=1, token_hash="same", expires_at=NOW, created_at=NOW)
        enqueue(conn, "erase-user", args={"user_id": 1, "batch_size": 50})
    with Vanish(db_url, tokens, tokens.c.user_id == 1, at) as vanish:
        report = work(engine)
    assert (report.succeeded, report.failed) == (1, 0)
    assert vanish.deleted > 0 and _count(engine, tokens) == 0
    assert _count(engine, users, users.c.email == "erased-1@invalid") == 1


def test_queue_prune_deletes_at_most_batch_size_rows_per_transaction(workspace, engine, cli):
    qm.create(engine)
    common = dict(job_name="test-noop", args="{}", run_at=NOW, attempts=1, max_attempts=3, retry_delays="[]",
                  created_at=NOW)
    with engine.begin() as conn:
        fill(conn, qm.queued_jobs, 700, status="succeeded", finished_at=NOW - timedelta(days=40), **common)
        fill(conn, qm.queued_jobs, 40, status="succeeded", finished_at=NOW, **common)
        fill(conn, qm.queued_jobs, 30, status="enqueued", **common)
    with RowsPerTransaction("queued_jobs") as watch, time_machine.travel(NOW, tick=False):
        result = cli(workspace, "queue", "prune", "--older-than", "30d", "--batch-size", "50")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "deleted 700 finished job(s)"
    assert watch.largest <= 50 and sum(watch.committed) == 700
    assert _count(engine, qm.queued_jobs) == 70


@pytest.mark.slow
def test_sigterm_stops_queue_prune_between_two_batches(workspace, engine):
    import signal
    import time

    qm.create(engine)
    common = dict(job_name="test-noop", args="{}", run_at=NOW, attempts=1, max_attempts=3, retry_delays="[]",
                  created_at=NOW, status="succeeded", finished_at=NOW)
    total = 200_000
    with engine.begin() as conn:
        fill(conn, qm.queued_jobs, total, **common)
    proc = workspace.popen("queue", "prune", "--older-than", "1h", "--batch-size", "100")
    deadline = time.monotonic() + 60
    while _count(engine, qm.queued_jobs) == total:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    deleted = int(out.split()[1])
    assert out.strip() == f"deleted {deleted} finished job(s) before the stop request"
    assert 0 < deleted < total and _count(engine, qm.queued_jobs) == total - deleted
