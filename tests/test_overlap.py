"""Overlap policy per job (`overlap = "skip" | "buffer_one"`) and `stuck` runs, with real CLI processes: a
long-running holder (tests/plugin_pkg's test-sleeper) and ticks that find its lock busy, on every database."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import pytest
from sqlalchemy import create_engine, select

from jobs.models import executions
from tests.conftest import Workspace
from tests.test_slot_fence import _side_effects, _sync

# The configured run (the owed run uses it) does two quick batches; the holder asks on its command line for one,
# then waits outside any transaction (SQLite's one writer serves the ticks meanwhile) until the test releases it.
SLEEPER = '[jobs.test-sleeper]\ninterval = "1h"\nbatches = 2\nbatch_seconds = 0.0\n'
TICKS = 3


def _holder(ws: Workspace, *args: str) -> subprocess.Popen:
    return ws.popen("test-sleeper", "--batches", "1", "--batch-seconds", "0", "--pause-seconds", "60",
                    "--release-file", str(ws.path / "release"), *args)


def _release(ws: Workspace) -> None:
    (ws.path / "release").touch()


def _workspace(tmp_path, db_url: str, overlap: str | None) -> Workspace:
    ws = Workspace(tmp_path, db_url, plugins=True).upgrade()
    ws.write_config(SLEEPER + (f'overlap = "{overlap}"\n' if overlap else ""))
    return ws


def _entered(engine, proc: subprocess.Popen, timeout: float = 30) -> None:
    """Until the holder's run has recorded its entry (it holds the lock and its run is `running`)."""
    deadline = time.monotonic() + timeout
    while ("enter", proc.pid) not in _side_effects(engine):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate(timeout=10)
        time.sleep(0.05)


@contextmanager
def _held(tmp_path, db_url: str, overlap: str | None) -> Iterator[tuple[Workspace, object, subprocess.Popen]]:
    """(workspace, engine, holder): the holder's run has entered and holds the lock. On the way out a holder the
    test left running is killed, and the engine disposed."""
    ws = _workspace(tmp_path, db_url, overlap)
    engine = create_engine(_sync(db_url))
    holder = _holder(ws, "--json")
    try:
        _entered(engine, holder)
        yield ws, engine, holder
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.communicate(timeout=30)
        engine.dispose()


def _ticks(ws: Workspace, n: int) -> list[dict]:
    """n scheduled ticks at once, each a process of its own, as cron or a CronJob starts them."""
    procs = [ws.popen("test-sleeper", "--json") for _ in range(n)]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        reports.append({**json.loads(out), "stderr": err})
    return reports


def _runs(cli, ws: Workspace) -> list[dict]:
    """The job's history (read in this process: only the holder and the ticks need processes of their own)."""
    result = cli(ws, "history", "test-sleeper", "--json")
    assert result.exit_code == 0, result.stderr
    return sorted(json.loads(result.stdout)["runs"], key=lambda r: r["id"])


def _owed_run_at(engine, job: str = "test-sleeper") -> datetime | None:
    with engine.connect() as conn:
        return conn.execute(select(executions.c.owed_run_at)
                            .where(executions.c.job_name == job)).scalar_one_or_none()


def _finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return json.loads(out)


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite", "postgres", "mariadb"], indirect=True)
def test_buffer_one_runs_exactly_one_owed_run_right_after_the_holder_however_many_ticks(tmp_path, db_url, cli):
    with _held(tmp_path, db_url, "buffer_one") as (ws, engine, holder):
        ticks = _ticks(ws, TICKS)
        assert holder.poll() is None, "the holder ended before the ticks: nothing was tested"
        assert _owed_run_at(engine) is not None
        _release(ws)
        assert [t["status"] for t in ticks] == ["locked"] * TICKS
        for tick in ticks:
            assert tick["details"] == [
                "buffered: another process holds the lock; one run is owed and starts when it finishes"]
            assert "buffered: another process holds the lock" in tick["stderr"]
        report = _finish(holder)
        assert report["status"] == "succeeded" and report["counts"] == {"batches": 1}
        owed = report["owed_run"]
        assert (owed["status"], owed["trigger"], owed["counts"]) == ("succeeded", "scheduled", {"batches": 2})
        runs = _runs(cli, ws)
        assert [(r["status"], r["items"], r["pid"]) for r in runs] == [("succeeded", 1, holder.pid),
                                                                       ("succeeded", 2, holder.pid)]
        gap = (datetime.fromisoformat(runs[1]["started_at"]) - datetime.fromisoformat(runs[0]["finished_at"]))
        assert 0 <= gap.total_seconds() < 1, "the owed run starts right after the holder's outcome"
        assert _owed_run_at(engine) is None, "the owed run's start paid the debt"
        after = cli(ws, "test-sleeper", "--json")
        assert json.loads(after.stdout)["status"] == "not_due", "one owed run, not one per tick"
        assert len(_runs(cli, ws)) == 2


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite", "postgres", "mariadb"], indirect=True)
def test_skip_runs_nothing_after_the_holder(tmp_path, db_url, cli):
    with _held(tmp_path, db_url, None) as (ws, engine, holder):
        ticks = _ticks(ws, TICKS)
        assert holder.poll() is None, "the holder ended before the ticks: nothing was tested"
        _release(ws)
        report = _finish(holder)
        assert [(t["status"], t["details"]) for t in ticks] == [("locked", [])] * TICKS
        assert all("skipped: another process holds the lock" in t["stderr"] for t in ticks)
        assert report["status"] == "succeeded" and "owed_run" not in report
        assert [r["items"] for r in _runs(cli, ws)] == [1]
        assert _owed_run_at(engine) is None


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite", "postgres", "mariadb"], indirect=True)
def test_a_run_owed_by_a_holder_killed_with_sigkill_is_run_by_the_next_tick(tmp_path, db_url, cli):
    with _held(tmp_path, db_url, "buffer_one") as (ws, engine, holder):
        assert [t["status"] for t in _ticks(ws, 1)] == ["locked"]
        assert _owed_run_at(engine) is not None
        holder.send_signal(signal.SIGKILL)
        holder.communicate(timeout=30)
        nxt = ws.run("test-sleeper", "--json")
        assert nxt.returncode == 0, nxt.stderr
        report = json.loads(nxt.stdout)
        assert (report["status"], report["trigger"], report["counts"]) == ("succeeded", "scheduled", {"batches": 2})
        assert "the run a busy tick owed (overlap = buffer_one)" in nxt.stderr
        assert [r["status"] for r in _runs(cli, ws)] == ["abandoned", "succeeded"]
        assert _owed_run_at(engine) is None
        assert json.loads(cli(ws, "test-sleeper", "--json").stdout)["status"] == "not_due"


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite", "postgres", "mariadb"], indirect=True)
def test_a_run_past_its_timeout_and_grace_is_stuck_and_check_and_status_name_its_host_and_pid(tmp_path, db_url, cli):
    """A run that waits past timeout + grace between batches (no boundary to stop at) holds the lock and stays
    `running` past its limit."""
    ws = Workspace(tmp_path, db_url, plugins=True).upgrade()
    ws.write_config('[jobs.test-sleeper]\ninterval = "1h"\ntimeout = "1s"\ngrace = "1s"\n')
    assert cli(ws, "status").exit_code == 0  # every job noted as seen: the checks below write nothing
    engine = create_engine(_sync(db_url))
    holder = _holder(ws)
    try:
        _entered(engine, holder)
        time.sleep(2.1)  # past timeout + grace
        check = cli(ws, "check")
        status = cli(ws, "status", "--json")
        table = cli(ws, "status")
        assert holder.poll() is None, "the holder ended before the checks: nothing was tested"
    finally:
        _release(ws)
        holder.communicate(timeout=30)
    host = socket.gethostname()
    assert check.exit_code == 1, check.stdout + check.stderr
    line = next(ln for ln in check.stdout.splitlines() if ln.startswith("STUCK test-sleeper"))
    assert f"on {host}:{holder.pid} (run " in line and "longer than its timeout + grace (2s)" in line
    job = next(j for j in json.loads(status.stdout)["jobs"] if j["name"] == "test-sleeper")
    assert (job["state"], job["holder_host"], job["holder_pid"]) == ("stuck", host, holder.pid)
    assert f"stuck on {host}:{holder.pid}" in table.stdout
    checked = json.loads(cli(ws, "check", "--json").stdout)
    assert holder.returncode == 1, "the run timed out at its batch boundary"
    assert all(j["holder_pid"] is None for j in checked["jobs"]), "a finished run holds nothing"
    engine.dispose()


def test_a_second_busy_tick_leaves_the_owed_run_as_it_is_and_a_start_pays_it(engine):
    """jobs.overlap.owe_run: one debt however many ticks (the first one's time kept); any start clears it."""
    from datetime import timedelta, timezone

    from jobs import overlap, tracking
    from jobs.config import load
    from jobs.outcome import Trigger
    from jobs.registry import builtin_specs

    job = load({}, builtin_specs(), database_url="sqlite://").job("log-cleanup")
    first = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)
    assert overlap.owe_run(engine, job.name, first) is True, "a job the database did not know yet"
    assert [overlap.owe_run(engine, job.name, first + timedelta(seconds=n)) for n in (1, 2)] == [False, False]
    assert _owed_run_at(engine, job.name) == first
    tracking.start_run(engine, job, Trigger.SCHEDULED, first + timedelta(seconds=3), "h", 1)
    assert _owed_run_at(engine, job.name) is None


BAD_OVERLAP = ['"queue"', '"Skip"', "true", '["skip"]', '""']


@pytest.mark.backend_neutral
@pytest.mark.parametrize("value", BAD_OVERLAP)
def test_a_bad_overlap_exits_78_with_one_line_naming_the_key(workspace, cli, value):
    workspace.write_config(f"[jobs.refresh-token-cleanup]\noverlap = {value}\n")
    result = cli(workspace, "refresh-token-cleanup")
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 78 and len(lines) == 1, result.stderr
    assert "[jobs.refresh-token-cleanup] overlap: must be one of skip, buffer_one" in lines[0]


def test_a_bad_overlap_is_refused_by_the_console_script_too(sqlite_workspace):
    """The quick path loads the config first: it hands a bad one over, and the full CLI names the key."""
    sqlite_workspace.write_config('[jobs.refresh-token-cleanup]\noverlap = "queue"\n')
    result = sqlite_workspace.run("refresh-token-cleanup")
    assert result.returncode == 78 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "[jobs.refresh-token-cleanup] overlap:" in result.stderr
