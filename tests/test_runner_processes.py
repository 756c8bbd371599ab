"""The pipeline with real processes: concurrency, SIGKILL between batches, SIGTERM, errors, secrets."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from jobs.clock import utcnow
from jobs.models import executions
from tests.app_data import add_tokens, count_tokens, tokens

pytestmark = pytest.mark.slow


def _history(ws) -> list[dict]:
    return json.loads(ws.run("history", "--json").stdout)["runs"]


@contextmanager
def _holding_the_rows(engine):
    """A transaction of the application's that holds what the cleanup's first write needs (the expired tokens'
    row locks; on SQLite, the database's write lock), until the block ends."""
    if engine.dialect.name == "sqlite":
        conn = sqlite3.connect(engine.url.database, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.rollback()
            conn.close()
        return
    with engine.connect() as conn, conn.begin():
        # an application's session, not the tool's: no short idle timeout however long the losers take
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL idle_in_transaction_session_timeout = 0")
        else:
            conn.exec_driver_sql("SET SESSION wait_timeout = 600")
        conn.execute(select(tokens.c.id).where(tokens.c.token_hash.like("old%")).with_for_update()).all()
        yield


TICKS = 8  # started together, all find the lock free and race for it (reliability/ runs sixteen per window)


def test_concurrent_ticks_make_exactly_one_run_and_no_loser_waits(workspace, engine):
    """Ticks started together while the application holds the rows: the winner waits for them, holding the
    job's lock, until every other tick has exited; a loser that waited for the lock instead of exiting could
    never end, and the deadline fails the test."""
    assert workspace.run("refresh-token-cleanup").returncode == 0  # a job seen before, due again: the losers'
    with engine.begin() as conn:  # decision is the quick path's, as at every tick after the first
        conn.execute(update(executions).values(schedule_slot_at=utcnow() - timedelta(days=3)))
    add_tokens(engine, utcnow(), expired=100, fresh=10)
    args = [sys.executable, "-m", "cli", "refresh-token-cleanup", "--json"]
    env = workspace.env()
    with _holding_the_rows(engine):
        procs = [subprocess.Popen(args, cwd=workspace.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(TICKS)]
        try:
            deadline = time.monotonic() + 60
            while sum(p.poll() is not None for p in procs) < TICKS - 1:
                assert time.monotonic() < deadline, "a tick did not end while the winner ran: a loser waited"
                time.sleep(0.05)
            winners = [p for p in procs if p.poll() is None]
            assert len(winners) == 1, [p.communicate() for p in procs if p.poll() is not None]
        except BaseException:
            for p in procs:
                p.kill()
            raise
    outputs = {p.pid: p.communicate(timeout=60) for p in procs}
    assert [p.returncode for p in procs] == [0] * TICKS, [err for _, err in outputs.values()]
    reports = {pid: json.loads(out) for pid, (out, _) in outputs.items()}
    assert reports[winners[0].pid]["status"] == "succeeded"
    assert sorted(r["status"] for pid, r in reports.items() if pid != winners[0].pid) == ["locked"] * (TICKS - 1)
    runs = _history(workspace)
    assert [(r["status"], r["pid"]) for r in runs] == [("succeeded", winners[0].pid)]  # the first found no work
    assert count_tokens(engine, "old") == 0 and count_tokens(engine, "new") == 10


def _start_slow_cleanup(workspace, engine):
    add_tokens(engine, utcnow(), expired=4000, fresh=300)
    workspace.write_config('[jobs.refresh-token-cleanup]\nbatch_size = 1\n')
    proc = workspace.popen("refresh-token-cleanup", "--force")
    deadline = time.monotonic() + 60
    while count_tokens(engine, "old") > 3900:
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    return proc


def test_sigkill_between_batches_leaves_whole_batches_and_the_next_run_finishes(workspace, engine):
    proc = _start_slow_cleanup(workspace, engine)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    left = count_tokens(engine, "old")
    assert 0 < left < 4000, "killed mid-run"
    assert count_tokens(engine, "new") == 300
    workspace.write_config('[jobs.refresh-token-cleanup]\nbatch_size = 1000\n')  # the rest, in a few batches
    result = workspace.run("refresh-token-cleanup", "--force", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["counts"]["deleted"] == left
    assert count_tokens(engine, "old") == 0 and count_tokens(engine, "new") == 300
    assert [r["status"] for r in _history(workspace)] == ["succeeded", "abandoned"]


def test_sigterm_mid_run_rolls_back_the_batch_records_interrupted_and_exits_143(workspace, engine):
    proc = _start_slow_cleanup(workspace, engine)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert count_tokens(engine, "new") == 300
    runs = _history(workspace)
    assert runs[0]["status"] == "interrupted" and "SIGTERM" in runs[0]["error"]
    assert runs[0]["counts"]["deleted"] == 4000 - count_tokens(engine, "old")
    workspace.write_config('[jobs.refresh-token-cleanup]\nbatch_size = 1000\n')  # the rest, in a few batches
    again = workspace.run("refresh-token-cleanup", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "succeeded", "lock released, still due"


def test_sigint_exits_130(workspace, engine):
    proc = _start_slow_cleanup(workspace, engine)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert _history(workspace)[0]["status"] == "interrupted"
