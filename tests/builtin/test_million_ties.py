"""A million rows sharing one value: every transaction stays within batch_size rows and short, a SIGTERM
is honoured within one batch, and a SIGKILLed run's history shows the rows it had committed.

The default run checks the same with 100,000 rows in batches of 1,000 (as many batches); the million rows
in batches of the default 10,000 run with the reliability tests (`pytest -m reliability`)."""

from __future__ import annotations

import json
import signal
import time
from datetime import datetime, timedelta, timezone

import pytest
import time_machine
from sqlalchemy import func, select, text

from jobs.app_tables import default_metadata
from jobs.models import runs
from tests.layouts import RowsPerTransaction, fill

pytestmark = pytest.mark.slow
MILLION = 1_000_000
BATCH = 10_000  # the default batch_size
SIZES = [pytest.param((100_000, 1_000), id="100k"),
         pytest.param((MILLION, BATCH), id="1M", marks=pytest.mark.reliability)]
LONGEST = 1.0  # seconds: the time target is 0.1-0.2 s; one transaction for a million rows took 0.4-1.7 s
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
APP = default_metadata()
JOBS = {"refresh-token-cleanup": ("refresh_tokens", "deleted"), "log-cleanup": ("logs", "rows_deleted")}


def _fill(engine, job: str, n: int, value: datetime) -> None:
    """n rows with one value, built by the database. PostgreSQL: refresh_tokens is analyzed (its statistics
    know the tie, so the job sweeps blocks), logs never is (walked in (created_at, id) order, the tie along
    the key's index even though the planner has no statistics)."""
    table = APP.tables[JOBS[job][0]]
    with engine.begin() as conn:
        if job == "refresh-token-cleanup":
            fill(conn, table, n, user_id=1, token_hash="t", created_at=value, expires_at=value)
        else:
            fill(conn, table, n, level="INFO", message="m", created_at=value)
    if engine.dialect.name == "postgresql" and job == "refresh-token-cleanup":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE refresh_tokens"))


def _rows(engine, job: str) -> int:
    table = APP.tables[JOBS[job][0]]
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


def _running_items(engine) -> int:
    """Read in autocommit: on SQLite the tool's transactions take the write lock up front, and a poller
    queueing for it behind a million rows of back-to-back batches would see the run only once it ended."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        return conn.execute(select(func.coalesce(func.max(runs.c["items"]), 0)).where(runs.c.status == "running")).scalar()


def _wait_for_work(engine, proc) -> None:
    deadline = time.monotonic() + 60
    while _running_items(engine) == 0:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no batch committed within 60 s"
        time.sleep(0.01)


def _sized(workspace, job: str, size: tuple[int, int]) -> tuple[int, int]:
    """(rows, batch_size), the batch size written to the workspace's configuration."""
    workspace.write_config(f"[jobs.{job}]\nbatch_size = {size[1]}\n")
    return size


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("job", JOBS)
def test_a_million_tied_rows_go_in_short_transactions_of_at_most_batch_size_rows(workspace, engine, cli, job, size):
    rows, batch = _sized(workspace, job, size)
    _fill(engine, job, rows, NOW - timedelta(days=400))
    with RowsPerTransaction(JOBS[job][0]) as watch, time_machine.travel(NOW, tick=False):
        result = cli(workspace, job, "--force", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["counts"][JOBS[job][1]] == rows == sum(watch.committed)
    assert watch.largest <= batch and report["largest_batch_items"] <= batch
    assert report["transactions"] >= rows // batch
    assert report["longest_transaction_seconds"] < LONGEST
    assert _rows(engine, job) == 0


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("job", JOBS)
def test_sigterm_during_a_million_tied_rows_is_honoured_within_one_batch(workspace, engine, job, size):
    rows, batch = _sized(workspace, job, size)
    _fill(engine, job, rows, datetime.now(timezone.utc) - timedelta(days=400))
    proc = workspace.popen(job, "--force", "--json")
    _wait_for_work(engine, proc)
    committed_before = _running_items(engine)
    proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    committed_after = _running_items(engine)  # 0 when the run already recorded its end
    out, err = proc.communicate(timeout=60)
    stopped = time.monotonic() - signalled
    assert proc.returncode == 143, err
    report = json.loads(out)
    deleted = report["counts"][JOBS[job][1]]
    assert report["status"] == "interrupted"
    assert 0 < deleted < rows and _rows(engine, job) == rows - deleted
    if committed_after:
        assert deleted - committed_after <= batch, "more than the batch in flight ran after the signal"
    else:  # a batch may have committed between the read and the signal, then the one in flight
        assert deleted - committed_before <= 2 * batch, "more than the batch in flight ran after the signal"
    assert stopped < 5 * LONGEST


@pytest.mark.parametrize("size", SIZES)
def test_a_sigkilled_run_shows_the_rows_it_had_committed_once_reaped(workspace, engine, size):
    rows, _ = _sized(workspace, "refresh-token-cleanup", size)
    _fill(engine, "refresh-token-cleanup", rows, datetime.now(timezone.utc) - timedelta(days=400))
    proc = workspace.popen("refresh-token-cleanup", "--force")
    _wait_for_work(engine, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    committed = rows - _rows(engine, "refresh-token-cleanup")
    assert 0 < committed < rows
    after = workspace.run("refresh-token-cleanup", "--force", "--json")
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)["counts"]["deleted"] == rows - committed
    history = json.loads(workspace.run("history", "refresh-token-cleanup", "--json").stdout)["runs"]
    killed = next(r for r in history if r["status"] == "abandoned")
    assert killed["counts"] == {"deleted": committed} and killed["items"] == committed
