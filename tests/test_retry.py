"""In-process retries are bounded by time from the first attempt: however slowly each attempt fails,
the call ends within [retry] max_time plus one attempt."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from jobs import retry
from jobs.config import RetryPolicy


def _slow_failure(attempt_seconds: float, starts: list[float]):
    def attempt() -> None:
        starts.append(time.monotonic())
        time.sleep(attempt_seconds)
        raise ConnectionError("no answer")

    return attempt


@pytest.mark.parametrize("attempt_seconds", [0.2, 0.7, 1.3])
def test_no_attempt_starts_after_max_time_so_the_call_ends_within_max_time_plus_one_attempt(attempt_seconds):
    policy = RetryPolicy(attempts=100, initial_wait=timedelta(0), max_wait=timedelta(0), max_time=timedelta(seconds=1))
    starts: list[float] = []
    begun = time.monotonic()
    with pytest.raises(ConnectionError):
        retry.call(_slow_failure(attempt_seconds, starts), policy)
    elapsed = time.monotonic() - begun
    assert all(start - begun <= 1.0 + 0.05 for start in starts), [s - begun for s in starts]
    assert elapsed <= 1.0 + attempt_seconds + 0.15, elapsed


def test_no_backoff_sleeps_past_max_time_and_the_last_attempt_starts_at_it():
    policy = RetryPolicy(attempts=100, initial_wait=timedelta(seconds=0.4), max_wait=timedelta(seconds=5),
                         max_time=timedelta(seconds=1))
    slept: list[float] = []
    begun = time.monotonic()

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    starts: list[float] = []
    with pytest.raises(ConnectionError):
        retry.call(_slow_failure(0, starts), policy, sleep=sleep)
    assert time.monotonic() - begun <= 1.0 + 0.1
    assert slept, "no retry happened at all"
    assert 1.0 - 0.05 <= starts[-1] - begun <= 1.0 + 0.05, "the budget was not used to its end"


def test_a_lock_wait_that_used_up_max_time_gets_one_more_attempt(tmp_path):
    """SQLite's busy_timeout (the database timing its own wait) may outlast max_time: the write lock is
    then usually free, so one more attempt runs, where a silent peer's would not."""
    import sqlite3
    import threading

    from sqlalchemy import create_engine, text

    path = tmp_path / "busy.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 1.2})
    threading.Timer(1.5, holder.rollback).start()
    attempts: list[float] = []

    def write() -> None:
        attempts.append(time.monotonic())
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))

    policy = RetryPolicy(attempts=5, initial_wait=timedelta(0), max_wait=timedelta(0), max_time=timedelta(seconds=1))
    retry.call(write, policy)
    assert len(attempts) == 2
    engine.dispose()
    holder.close()
