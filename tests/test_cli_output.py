"""What people and machines read: status, history, check, --json, --quiet, terminal vs cron output."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
import time_machine

T0 = datetime(2026, 5, 4, 3, 0, tzinfo=timezone.utc)


def at(when: datetime):
    return time_machine.travel(when, tick=False)


def test_status_json_reports_last_run_next_due_and_streak(workspace, cli):
    with at(T0):
        assert cli(workspace, "refresh-token-cleanup").exit_code == 0
        status = json.loads(cli(workspace, "status", "--json").stdout)
    job = {j["name"]: j for j in status["jobs"]}["refresh-token-cleanup"]
    assert job["state"] == "ok" and job["last_status"] == "succeeded"
    assert job["last_executed_at"].startswith("2026-05-04T03:00:00")
    assert job["next_due_at"].startswith("2026-05-05T03:00:00")
    assert job["consecutive_failures"] == 0 and job["last_error"] is None


@pytest.mark.backend_neutral
def test_status_table_shows_every_job_in_plain_columns_without_a_terminal(workspace, cli):
    with at(T0):
        cli(workspace, "refresh-token-cleanup")
        out = cli(workspace, "status").stdout
    header, *rows = out.strip().splitlines()
    assert header.split()[:3] == ["JOB", "STATE", "SCHEDULE"]
    row = next(r for r in rows if r.startswith("refresh-token-cleanup"))
    assert "succeeded" in row and "2026-05-05 03:00:00" in row


def test_history_lists_runs_newest_first_with_counts(workspace, cli):
    for hour in (3, 4):
        with at(T0 + timedelta(hours=hour)):
            cli(workspace, "refresh-token-cleanup", "--force")
    runs = json.loads(cli(workspace, "history", "refresh-token-cleanup", "--limit", "1", "--json").stdout)["runs"]
    assert len(runs) == 1 and runs[0]["trigger"] == "forced"
    assert runs[0]["started_at"].startswith("2026-05-04T07:00") and runs[0]["counts"] == {"deleted": 0}


@pytest.mark.backend_neutral
def test_history_of_an_unknown_job_is_a_usage_error(workspace, cli):
    result = cli(workspace, "history", "nope")
    assert result.exit_code == 2 and "unknown job" in result.stderr


def test_check_is_ok_when_on_time_and_fails_when_overdue_past_grace(workspace, cli):
    workspace.write_config('[jobs.refresh-token-cleanup]\ngrace = "1h"\n')
    with at(T0):
        cli(workspace, "refresh-token-cleanup")
    with at(T0 + timedelta(hours=24, minutes=59)):
        ok = cli(workspace, "check")
    assert ok.exit_code == 0 and ok.stdout.startswith("OK")
    with at(T0 + timedelta(hours=25, minutes=1)):
        late = cli(workspace, "check", "--json")
    assert late.exit_code == 1
    report = json.loads(late.stdout)
    job = {j["job"]: j for j in report["jobs"]}["refresh-token-cleanup"]
    assert report["ok"] is False and job["state"] == "overdue" and 0 < job["overdue_seconds"] <= 120


def test_check_fails_for_a_failing_job_and_names_the_error(plugin_workspace, cli):
    cli(plugin_workspace, "test-fail")
    result = cli(plugin_workspace, "check")
    assert result.exit_code == 1
    assert "FAILING test-fail: 1 failure(s) in a row, last: boom" in result.stdout


@pytest.mark.backend_neutral
def test_quiet_prints_nothing_on_success_or_skip(workspace, cli):
    ran = cli(workspace, "--quiet", "refresh-token-cleanup", "--force")
    skipped = cli(workspace, "--quiet", "refresh-token-cleanup")
    assert (ran.exit_code, ran.stdout, ran.stderr) == (0, "", "")
    assert (skipped.exit_code, skipped.stdout, skipped.stderr) == (0, "", "")


@pytest.mark.backend_neutral
def test_without_a_terminal_a_run_prints_plain_log_lines_only(workspace, cli):
    result = cli(workspace, "refresh-token-cleanup")
    assert result.exit_code == 0 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert "INFO refresh-token-cleanup run=1: started" in lines[0]
    assert "INFO refresh-token-cleanup run=1: succeeded" in lines[1] and "deleted=0" in lines[1]


@pytest.mark.backend_neutral
def test_json_prints_exactly_one_object(workspace, cli):
    result = cli(workspace, "refresh-token-cleanup", "--json")
    report = json.loads(result.stdout)
    assert result.stdout.count("\n") == 1
    assert report["status"] == "succeeded" and report["exit_code"] == 0 and report["run_id"] == 1


def _in_terminal(ws, *args: str) -> str:
    """Run the CLI with stdout and stderr on a pseudo-terminal, as a person at a shell would."""
    controller, terminal = pty.openpty()
    env = ws.env(COLUMNS="160", TERM="xterm")
    env.pop("NO_COLOR")
    proc = subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=ws.path, env=env,
                            stdout=terminal, stderr=terminal, stdin=subprocess.DEVNULL)
    os.close(terminal)
    chunks = []
    while True:
        try:
            data = os.read(controller, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(controller)
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.backend_neutral
def test_at_a_terminal_a_run_ends_with_a_summary_table(workspace):
    screen = _in_terminal(workspace, "refresh-token-cleanup")
    assert "refresh-token-cleanup" in screen and "succeeded" in screen
    assert "│" in screen or "┃" in screen, screen
    assert "INFO" not in screen


@pytest.mark.backend_neutral
def test_at_a_terminal_status_is_a_rich_table(workspace, cli):
    cli(workspace, "refresh-token-cleanup")
    screen = _in_terminal(workspace, "status")
    assert "┏" in screen and "refresh-token-cleanup" in screen


def test_run_due_runs_every_due_job_once(plugin_workspace, cli):
    first = json.loads(cli(plugin_workspace, "run-due", "--json").stdout)
    statuses = {j["job"]: j["status"] for j in first["jobs"]}
    assert statuses["refresh-token-cleanup"] == "succeeded" and statuses["test-fail"] == "failed"
    assert first["exit_code"] == 1
    second = json.loads(cli(plugin_workspace, "run-due", "--json").stdout)
    assert {j["job"]: j["status"] for j in second["jobs"]}["refresh-token-cleanup"] == "not_due"


def test_pause_and_resume_are_reported_and_stored(workspace, cli):
    assert cli(workspace, "pause", "refresh-token-cleanup").stdout.strip() == "refresh-token-cleanup: paused"
    assert json.loads(cli(workspace, "refresh-token-cleanup", "--json").stdout)["status"] == "paused"
    assert cli(workspace, "resume", "refresh-token-cleanup").stdout.strip() == "refresh-token-cleanup: resumed"
    assert json.loads(cli(workspace, "refresh-token-cleanup", "--json").stdout)["status"] == "succeeded"


def test_unlock_breaks_a_stale_lease(workspace, cli):
    from jobs.db import make_engine
    from jobs.locks.lease import LeaseLockBackend

    workspace.write_config('[locks]\nbackend = "lease"\n')
    engine = make_engine(workspace.db_url)
    held = LeaseLockBackend(engine).try_acquire("refresh-token-cleanup", timedelta(minutes=5))
    held._stop.set()
    assert json.loads(cli(workspace, "refresh-token-cleanup", "--json").stdout)["status"] == "locked"
    assert cli(workspace, "unlock", "refresh-token-cleanup").stdout.strip() == "refresh-token-cleanup: lease broken"
    assert json.loads(cli(workspace, "refresh-token-cleanup", "--json").stdout)["status"] == "succeeded"
    engine.dispose()


def test_unlock_breaks_no_session_or_file_lock_and_names_a_live_holder(workspace, cli):
    from jobs.db import dialect_of
    from tests.locks_helpers import build_backend

    backend_name = {"sqlite": "file", "postgresql": "postgres", "mysql": "mysql"}[dialect_of(workspace.db_url)]
    backend, engine = build_backend(workspace.db_url, backend_name, workspace.path / "locks")
    held = backend.try_acquire("refresh-token-cleanup", timedelta(minutes=5))
    try:
        result = cli(workspace, "unlock", "refresh-token-cleanup")
        assert result.exit_code == 1
        assert f"refresh-token-cleanup is locked by a live process ({backend_name} lock)" in result.stderr
    finally:
        held.release()
    result = cli(workspace, "unlock", "refresh-token-cleanup")
    assert (result.exit_code, result.stdout.strip()) == (0, f"refresh-token-cleanup: not locked ({backend.crash_bound})")
    engine.dispose()


def test_check_flags_a_run_stuck_in_running_long_past_its_timeout(workspace, cli, engine):
    import tomllib

    from jobs import config as config_mod
    from jobs import tracking
    from jobs.outcome import Trigger
    from jobs.registry import builtin_specs

    cfg = config_mod.load(tomllib.loads('[jobs.refresh-token-cleanup]\ntimeout = "10m"\n'), builtin_specs(),
                          database_url=workspace.db_url)
    tracking.start_run(engine, cfg.job("refresh-token-cleanup"), Trigger.SCHEDULED, T0, "node-1", 4242)
    workspace.write_config('[jobs.refresh-token-cleanup]\ntimeout = "10m"\ngrace = "5m"\n')
    with at(T0 + timedelta(minutes=14)):
        assert cli(workspace, "check").exit_code == 0
    with at(T0 + timedelta(minutes=16)):
        result = cli(workspace, "check")
    assert result.exit_code == 1
    assert "STUCK refresh-token-cleanup: running since 2026-05-04 03:00:00 UTC on node-1:4242" in result.stdout
