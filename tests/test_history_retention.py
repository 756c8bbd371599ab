"""Retention of the run history by outcome: succeeded runs go after `keep_succeeded`, every other finished run
after `keep_failed`, in bounded transactions; `history --failed`; the tracking row keeps the last failure and
the streak whatever the history still holds."""

from __future__ import annotations

import json
import socket
from datetime import datetime, timedelta, timezone

import pytest
import time_machine
from sqlalchemy import func, select

from jobs import tracking
from jobs.config import load
from jobs.models import runs
from jobs.outcome import RunStatus, Trigger
from jobs.registry import builtin_specs
from jobs.retention import HistoryPolicy
from jobs.tracking import HISTORY_PRUNE_BATCH
from tests.conftest import refusing_table
from tests.layouts import RowsPerTransaction, fill

JOB = "refresh-token-cleanup"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


def _left(engine) -> dict[tuple[str, str], int]:
    with engine.connect() as conn:
        rows = conn.execute(select(runs.c.job_name, runs.c.status, func.count())
                            .group_by(runs.c.job_name, runs.c.status)).all()
    return {(job, status): n for job, status, n in rows}


def test_succeeded_runs_past_keep_succeeded_go_while_failures_within_keep_failed_stay(workspace, engine, cli):
    workspace.write_config(f'[jobs.{JOB}]\nhistory.keep_succeeded = "7d"\n')  # keep_failed: the default, 90d
    common = dict(job_name=JOB, trigger="scheduled", host="h", pid=1, items=0)
    week_and_a_half, hundred_days = NOW - timedelta(days=10), NOW - timedelta(days=100)
    with engine.begin() as conn:
        fill(conn, runs, 2 * HISTORY_PRUNE_BATCH + 500, status="succeeded", started_at=week_and_a_half, **common)
        fill(conn, runs, 5, status="succeeded", started_at=NOW - timedelta(days=3), **common)
        fill(conn, runs, 7, status="failed", started_at=week_and_a_half, **common)
        fill(conn, runs, 2, status="interrupted", started_at=week_and_a_half, **common)
        fill(conn, runs, HISTORY_PRUNE_BATCH + 300, status="failed", started_at=hundred_days, **common)
        fill(conn, runs, 3, status="timed_out", started_at=hundred_days, **common)
        fill(conn, runs, 4, status="succeeded", started_at=week_and_a_half, **{**common, "job_name": "log-cleanup"})
    with RowsPerTransaction("job_runs") as watch, time_machine.travel(NOW, tick=False):
        result = cli(workspace, JOB, "--force")
    assert result.exit_code == 0, result.stderr
    assert watch.committed and max(watch.committed) <= HISTORY_PRUNE_BATCH
    # 2,500 successes and 1,303 failures past their retention, the two outcomes sharing a transaction
    pruned = sorted((n for n in watch.committed if n > 1), reverse=True)
    assert sum(pruned) == 2 * HISTORY_PRUNE_BATCH + 500 + HISTORY_PRUNE_BATCH + 300 + 3
    assert len(pruned) == 4, pruned
    assert _left(engine) == {
        (JOB, "succeeded"): 5 + 1,  # within 7 days, and this forced run
        (JOB, "failed"): 7,  # ten days old: within keep_failed
        (JOB, "interrupted"): 2,  # not a success: kept as long as the failures
        ("log-cleanup", "succeeded"): 4,  # another job's history is its own job's to prune
    }


def test_pruning_spares_the_run_that_just_finished_and_running_rows(engine):
    job = load({}, builtin_specs(), environ={}).job(JOB)
    host = socket.gethostname()
    long_run = tracking.start_run(engine, job, Trigger.FORCED, NOW - timedelta(hours=3), host, 1)
    tracking.finish_run(engine, job, long_run, RunStatus.SUCCEEDED, NOW - timedelta(hours=3), NOW, {}, None)
    with engine.begin() as conn:
        fill(conn, runs, 2, job_name=JOB, trigger="scheduled", host=host, pid=2, items=0, status="running",
             started_at=NOW - timedelta(days=400))
        fill(conn, runs, 3, job_name=JOB, trigger="scheduled", host=host, pid=3, items=0, status="succeeded",
             started_at=NOW - timedelta(hours=2))
    policy = HistoryPolicy(keep_succeeded=timedelta(hours=1), keep_failed=timedelta(hours=1))
    assert tracking.prune_history(engine, JOB, NOW, policy, spare=long_run) == 3
    left = {(r["id"] == long_run, r["status"]) for r in tracking.history(engine, JOB, 10)}
    assert left == {(True, "succeeded"), (False, "running")}


def test_the_last_failure_and_the_streak_outlive_the_history(workspace, engine, cli):
    refusing_table(workspace.db_url)
    policy = '[jobs.refresh-token-cleanup.history]\nkeep_succeeded = "1h"\nkeep_failed = "1h"\n'
    common = '[jobs.refresh-token-cleanup]\ninterval = "1h"\nretry_delays = ["1m", "1m", "1m", "1m"]\n'
    workspace.write_config(common + 'table = "nope"\n' + policy)
    for minutes in (0, 1, 2, 180):
        with time_machine.travel(NOW + timedelta(minutes=minutes), tick=False):
            assert cli(workspace, JOB).exit_code == 1
    with time_machine.travel(NOW + timedelta(hours=3), tick=False):
        [only] = json.loads(cli(workspace, "history", JOB, "--json").stdout)["runs"]
        state = _status(cli, workspace)
    assert only["status"] == "failed", "the three failures of the first minutes are past keep_failed"
    assert state["consecutive_failures"] == 4 and state["state"] == "failing"

    workspace.write_config(common + policy)  # fixed: the job's own table again
    with time_machine.travel(NOW + timedelta(hours=5), tick=False):
        assert cli(workspace, JOB).exit_code == 0
        assert json.loads(cli(workspace, "history", JOB, "--json").stdout)["runs"] == []
        assert "`cronwarden status` shows each job's last failure" in cli(workspace, "history", JOB, "--failed").stdout
        state = _status(cli, workspace)
        plain = cli(workspace, "status").stdout
    assert state["state"] == "ok" and state["consecutive_failures"] == 0
    assert state["last_success_at"].startswith("2026-06-01T17:00:00")
    assert state["last_failure_at"].startswith("2026-06-01T15:00:00")
    assert "nope" in state["last_failure_error"]
    [row] = [line for line in plain.splitlines() if line.startswith(JOB)]
    assert "2026-06-01 15:00:00" in row and state["last_failure_error"][:40] in row, plain


def test_an_abandoned_run_is_the_last_failure(engine):
    job = load({}, builtin_specs(), environ={}).job(JOB)
    tracking.start_run(engine, job, Trigger.SCHEDULED, NOW, socket.gethostname(), 1)
    tracking.reap_abandoned(engine, job, NOW + timedelta(minutes=5))
    row = tracking.read_state(engine, JOB)
    assert row is not None and row["consecutive_failures"] == 1
    assert row["last_failure_at"] == NOW + timedelta(minutes=5) and "died" in row["last_failure_error"]


def test_an_interrupted_run_is_no_failure_on_the_tracking_row(engine):
    job = load({}, builtin_specs(), environ={}).job(JOB)
    run_id = tracking.start_run(engine, job, Trigger.SCHEDULED, NOW, socket.gethostname(), 1)
    tracking.finish_run(engine, job, run_id, RunStatus.INTERRUPTED, NOW, NOW + timedelta(seconds=5), {},
                        "interrupted by SIGTERM")
    row = tracking.read_state(engine, JOB)
    assert row is not None and row["last_failure_at"] is None and row["consecutive_failures"] == 0


def test_history_failed_lists_only_the_runs_that_did_not_succeed(workspace, engine, cli):
    common = dict(trigger="scheduled", host="h", pid=1, items=0)
    with engine.begin() as conn:
        for hours, job, status in [(1, JOB, "succeeded"), (2, JOB, "failed"), (3, JOB, "running"),
                                   (4, JOB, "interrupted"), (5, JOB, "succeeded"), (6, JOB, "timed_out"),
                                   (7, "log-cleanup", "abandoned")]:
            fill(conn, runs, 1, job_name=job, status=status, started_at=NOW - timedelta(hours=hours),
                 error=None if status == "succeeded" else f"{status} here", **common)
    with time_machine.travel(NOW, tick=False):
        listed = json.loads(cli(workspace, "history", JOB, "--failed", "--json").stdout)["runs"]
        everywhere = json.loads(cli(workspace, "history", "--failed", "--limit", "2", "--json").stdout)["runs"]
        plain = cli(workspace, "history", JOB, "--failed")
    assert [r["status"] for r in listed] == ["failed", "interrupted", "timed_out"]
    assert [r["status"] for r in everywhere] == ["failed", "interrupted"], "newest first, --limit applies"
    assert plain.exit_code == 0
    header, *rows = plain.stdout.splitlines()
    assert header.split()[:3] == ["RUN", "JOB", "STATUS"]
    assert [row.split()[2] for row in rows] == ["failed", "interrupted", "timed_out"]
    assert "timed_out here" in rows[-1]


@pytest.mark.backend_neutral
@pytest.mark.parametrize(("toml", "message"), [
    (f'[jobs.{JOB}]\nhistory.keep_succeeded = "soon"\n', f"[jobs.{JOB}] history.keep_succeeded: "),
    (f'[jobs.{JOB}.history]\nkeep_failed = "10m"\n', f"[jobs.{JOB}] history.keep_failed: must be at least 1h"),
    (f'[jobs.{JOB}.history]\nruns = "none"\n', f"[jobs.{JOB}] history.runs: must be one of work, all"),
    (f'[jobs.{JOB}.history]\nkeep = "7d"\n', f"[jobs.{JOB}] history: unknown key 'keep'"),
    (f'[jobs.{JOB}]\nhistory = 7\n', f'[jobs.{JOB}] history: expected "work", "all" or a table'),
    ('[history]\nkeep_succeeded = "0s"\n', "[history] keep_succeeded: must be"),
    ('[history]\nretention = "30m"\n', "[history] retention: must be at least 1h"),
    ('[history]\nkeep = "1d"\n', "[history]: unknown key 'keep'"),
])
def test_a_bad_history_value_is_one_configuration_error_line(workspace, cli, toml, message):
    workspace.write_config(toml)
    result = cli(workspace, JOB)
    assert result.exit_code == 78
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr


def _policy(toml: str) -> dict[str, HistoryPolicy]:
    import tomllib

    config = load(tomllib.loads(toml), builtin_specs(), environ={})
    return {name: job.history for name, job in config.jobs.items()}


def test_every_form_of_the_history_key_is_read() -> None:
    days = lambda n: timedelta(days=n)  # noqa: E731
    default = _policy("")
    assert default[JOB] == HistoryPolicy("work", days(14), days(90)), "successes go sooner than failures"
    assert _policy(f'[jobs.{JOB}]\nhistory = "all"\n')[JOB] == HistoryPolicy("all", days(14), days(90))
    dotted = _policy(f'[jobs.{JOB}]\nhistory.keep_succeeded = "7d"\n')
    table = _policy(f'[jobs.{JOB}.history]\nruns = "all"\nkeep_succeeded = "2d"\nkeep_failed = "365d"\n')
    assert dotted[JOB] == HistoryPolicy("work", days(7), days(90))
    assert table[JOB] == HistoryPolicy("all", days(2), days(365))
    assert dotted["log-cleanup"] == default["log-cleanup"], "one job's keys leave the others alone"
    legacy = _policy('[history]\nretention = "30d"\n')
    assert legacy[JOB] == HistoryPolicy("work", days(30), days(30)), "the older key still means every run"
    both = _policy(f'[history]\nretention = "30d"\nkeep_failed = "180d"\n[jobs.{JOB}.history]\nkeep_succeeded = "1d"\n')
    assert both[JOB] == HistoryPolicy("work", days(1), days(180))
    assert both["email-queue"] == HistoryPolicy("work", days(30), days(180))


def _status(cli, ws) -> dict:
    return {j["name"]: j for j in json.loads(cli(ws, "status", "--json").stdout)["jobs"]}[JOB]


def test_the_readme_history_example_loads() -> None:
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    [block] = re.findall(r"```toml\n(\[jobs\.email-queue\.history\].*?)```", readme, re.S)
    assert _policy(block)["email-queue"] == HistoryPolicy("work", timedelta(days=3), timedelta(days=30))
