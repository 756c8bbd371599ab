"""One contract for every lock backend (ShedLock-style), on the databases each one serves."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from jobs.errors import LeaseLost
from tests.locks_helpers import PAIRS, build_backend, pair_id, url_for

TTL = timedelta(seconds=3)


@pytest.fixture(params=PAIRS, ids=pair_id)
def backends(request, tmp_path):
    """Two independent instances of one backend (two 'processes'), on their own engines."""
    database, backend = request.param
    url = url_for(request, database)
    first, e1 = build_backend(url, backend, tmp_path / "locks")
    second, e2 = build_backend(url, backend, tmp_path / "locks")
    yield first, second, e1
    e1.dispose()
    e2.dispose()


def test_a_held_lock_is_not_granted_again(backends):
    first, second, _ = backends
    held = first.try_acquire("job-a", TTL)
    assert held is not None
    assert second.try_acquire("job-a", TTL) is None
    held.release()


def test_a_released_lock_can_be_taken(backends):
    first, second, _ = backends
    first.try_acquire("job-a", TTL).release()
    again = second.try_acquire("job-a", TTL)
    assert again is not None
    again.release()


def test_locks_are_per_job(backends):
    first, second, _ = backends
    a = first.try_acquire("job-a", TTL)
    b = second.try_acquire("job-b", TTL)
    assert a is not None and b is not None
    a.release()
    b.release()


def test_busy_lock_answers_without_waiting(backends):
    first, second, _ = backends
    held = first.try_acquire("job-a", TTL)
    attempts = [second.try_acquire("job-a", TTL) for _ in range(20)]
    assert attempts == [None] * 20
    held.release()


def test_a_held_lock_verifies_inside_a_transaction(backends):
    first, _, engine = backends
    held = first.try_acquire("job-a", TTL)
    with engine.begin() as conn:
        held.verify(conn)
    held.release()


@pytest.fixture(params=[p for p in PAIRS if p[1] == "lease"], ids=pair_id)
def leases(request, tmp_path):
    database, backend = request.param
    url = url_for(request, database)
    first, e1 = build_backend(url, backend, tmp_path / "locks", ttl="2s")
    second, e2 = build_backend(url, backend, tmp_path / "locks", ttl="2s")
    yield first, second, e1
    e1.dispose()
    e2.dispose()

@pytest.mark.slow

def test_lease_is_renewed_while_the_run_lasts_longer_than_its_ttl(leases):
    first, second, _ = leases
    held = first.try_acquire("job-a", timedelta(seconds=2))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert second.try_acquire("job-a", timedelta(seconds=2)) is None
        time.sleep(0.25)
    held.release()
    again = second.try_acquire("job-a", timedelta(seconds=2))
    assert again is not None
    again.release()


def test_a_broken_lease_is_noticed_before_commit(leases):
    first, second, engine = leases
    held = first.try_acquire("job-a", timedelta(seconds=2))
    assert second.break_lease("job-a") is True
    taken = second.try_acquire("job-a", timedelta(seconds=2))
    assert taken is not None
    with pytest.raises(LeaseLost), engine.begin() as conn:
        held.verify(conn)
    held.release()
    with engine.begin() as conn:
        taken.verify(conn)
    taken.release()


def test_an_unrenewed_lease_expires_after_its_ttl(leases):
    first, second, _ = leases
    token_holder = first.try_acquire("job-a", timedelta(seconds=2))
    token_holder._stop.set()  # the renewal thread stops, as if the process froze
    token_holder._thread.join()
    assert second.try_acquire("job-a", timedelta(seconds=2)) is None
    time.sleep(2.3)
    taken = second.try_acquire("job-a", timedelta(seconds=2))
    assert taken is not None
    taken.release()


def test_mysql_locks_of_two_databases_on_one_server_are_independent(mysql_url, tmp_path):
    """GET_LOCK names are server-wide: two applications' databases must not block each other."""
    from tests.conftest import MYSQL_ADMIN_URL

    ours, e1 = build_backend(mysql_url, "mysql", tmp_path / "locks")
    theirs, e2 = build_backend(MYSQL_ADMIN_URL, "mysql", tmp_path / "locks")
    a = ours.try_acquire("job-a", TTL)
    b = theirs.try_acquire("job-a", TTL)
    assert a is not None and b is not None
    a.release()
    b.release()
    e1.dispose()
    e2.dispose()


def test_a_live_lease_is_refused_at_once_while_its_holder_writes_on_sqlite(sqlite_url, tmp_path):
    """A loser must not wait for the SQLite write lock that the holder's batch has."""
    from sqlalchemy import text

    first, e1 = build_backend(sqlite_url, "lease", tmp_path / "locks")
    second, e2 = build_backend(sqlite_url, "lease", tmp_path / "locks")
    held = first.try_acquire("job-a", TTL)
    with e1.begin() as conn:  # the holder's batch: BEGIN IMMEDIATE holds the database's write lock
        conn.execute(text("CREATE TABLE batch_work (x INTEGER)"))
        assert second.try_acquire("job-a", TTL) is None
    held.release()
    e1.dispose()
    e2.dispose()

@pytest.mark.slow

def test_a_holder_that_cannot_renew_steps_down_before_its_lease_ends(leases):
    """River's trust window: a holder whose renewals do not get through stops committing at
    `last renewal + TTL - TTL/5` on its own clock, while the server still counts the lease as its."""
    from sqlalchemy import text

    first, _, engine = leases
    ttl = timedelta(seconds=4)
    held = first.try_acquire("job-a", ttl)
    with engine.begin() as conn:
        held.verify(conn)
    blocker = engine.connect()
    tx = blocker.begin()
    if engine.dialect.name == "sqlite":
        blocker.exec_driver_sql("UPDATE job_leases SET locked_by = locked_by WHERE job_name = 'job-a'")
    else:  # the renewal's UPDATE waits for this row lock, as it would wait for a network that is gone
        blocker.execute(text("SELECT 1 FROM job_leases WHERE job_name = 'job-a' FOR UPDATE"))
    try:
        time.sleep(3.4)  # past 4 s - 0.8 s: the renewal at 2 s never finished
        live = first.owns(blocker, "job-a", held.token)
        with pytest.raises(LeaseLost, match="stepped down"), engine.connect() as conn:
            held.verify(conn)
        with pytest.raises(LeaseLost):
            held.check()
    finally:
        tx.rollback()
        blocker.close()
    assert live, "the server still counted the lease as the holder's: the step-down came first"
    held.release()


@pytest.mark.parametrize("pair", [p for p in PAIRS if p[1] in ("postgres", "mysql")], ids=pair_id)
def test_a_session_lock_whose_session_ended_is_known_lost_without_asking_the_server(pair, request, tmp_path):
    """Before each batch and each retry, a look at the lock session's socket: once the server (or the
    kernel, after unanswered keepalives) ended it, no further batch starts."""
    import time as clock

    from sqlalchemy import text

    url = url_for(request, pair[0])
    backend, engine = build_backend(url, pair[1], tmp_path / "locks")
    held = backend.try_acquire("job-a", TTL)
    held.check()
    session = held._conn.execute(text("SELECT pg_backend_pid()" if pair[1] == "postgres"
                                      else "SELECT CONNECTION_ID()")).scalar()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as admin:
        admin.execute(text("SELECT pg_terminate_backend(:s)" if pair[1] == "postgres" else f"KILL {int(session)}"),
                      {"s": session})
    deadline = clock.monotonic() + 5
    while clock.monotonic() < deadline:
        try:
            held.check()
        except LeaseLost:
            break
        clock.sleep(0.05)
    else:
        pytest.fail("check() never noticed the ended lock session")
    held.release()
    engine.dispose()
