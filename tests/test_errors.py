"""Failures end in the contract's exit codes, are recorded, and never leak the database password."""

from __future__ import annotations

import json

import pytest

MARKER = "PW-MARKER-7f3a9"


UNREACHABLE = {"CRONWARDEN_DATABASE_URL": f"postgresql://cw:{MARKER}@127.0.0.1:9/none"}


def test_unreachable_database_exits_75_after_bounded_retries_with_one_line(sqlite_workspace, cli):
    sqlite_workspace.write_config('[retry]\nattempts = 3\ninitial_wait = "0.1s"\nmax_time = "2s"\n')
    result = cli(sqlite_workspace, "--quiet", "refresh-token-cleanup", env=UNREACHABLE)
    assert result.exit_code == 75
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "database unreachable" in lines[0], result.stderr
    assert MARKER not in result.stdout + result.stderr


def test_unreachable_database_logs_each_retry_when_not_quiet(sqlite_workspace, cli):
    sqlite_workspace.write_config('[retry]\nattempts = 3\ninitial_wait = "0.1s"\nmax_time = "2s"\n')
    result = cli(sqlite_workspace, "status", env=UNREACHABLE)
    assert result.exit_code == 75
    assert "retrying" in result.stderr and "failed again (attempt 3)" in result.stderr
    assert MARKER not in result.stderr


def test_run_due_stops_at_the_first_job_that_finds_the_database_unreachable(sqlite_workspace, cli):
    sqlite_workspace.write_config('[retry]\nattempts = 3\ninitial_wait = "0.1s"\nmax_time = "2s"\n')
    quiet = cli(sqlite_workspace, "--quiet", "run-due", env=UNREACHABLE)
    assert quiet.exit_code == 75
    lines = quiet.stderr.strip().splitlines()
    assert len(lines) == 1 and "database unreachable" in lines[0] and "later job(s) not tried" in lines[0], lines
    assert MARKER not in quiet.stderr
    loud = cli(sqlite_workspace, "run-due", "--json", env=UNREACHABLE)
    assert loud.exit_code == 75
    assert [j["job"] for j in json.loads(loud.stdout)["jobs"]] == ["refresh-token-cleanup"]
    assert loud.stderr.count("; retrying") == 1, "one job's retry budget, not one per job"


def test_failing_job_exits_1_and_records_error_and_streak(plugin_workspace, cli):
    first = cli(plugin_workspace, "test-fail", "--json")
    assert first.exit_code == 1
    assert json.loads(first.stdout)["error"] == "boom"
    second = cli(plugin_workspace, "test-fail", "--force")
    assert second.exit_code == 1
    status = {j["name"]: j for j in json.loads(cli(plugin_workspace, "status", "--json").stdout)["jobs"]}
    assert status["test-fail"]["consecutive_failures"] == 2
    assert status["test-fail"]["state"] == "failing"
    assert "boom" in status["test-fail"]["last_error"]
    runs = json.loads(cli(plugin_workspace, "history", "test-fail", "--json").stdout)["runs"]
    assert [r["status"] for r in runs] == ["failed", "failed"] and all("boom" in r["error"] for r in runs)


@pytest.mark.backend_neutral
def test_failure_is_one_log_line_with_job_and_run_id(plugin_workspace, cli):
    result = cli(plugin_workspace, "--quiet", "test-fail")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "test-fail run=1" in lines[0] and "boom" in lines[0]


@pytest.fixture
def pg_with_password(pg_url):
    """The same server (trust auth ignores the password), reached through a URL carrying one."""
    return pg_url.replace("postgres@", f"postgres:{MARKER}@")


def test_database_password_never_appears_in_output_logs_or_history(tmp_path, pg_with_password, cli):
    from tests.conftest import Workspace

    ws = Workspace(tmp_path, pg_with_password, plugins=True)
    ws.write_config("")
    outputs = [
        cli(ws, "db", "upgrade", "--app-tables"),
        cli(ws, "refresh-token-cleanup", "--json"),
        cli(ws, "--log-format", "json", "refresh-token-cleanup", "--force"),
        cli(ws, "test-fail", "--json"),
        cli(ws, "status", "--json"),
        cli(ws, "status"),
        cli(ws, "history", "--json"),
        cli(ws, "check", "--json"),
        cli(ws, "list"),
        cli(ws, "--verbose", "test-fail", "--force"),
    ]
    assert [o.exit_code for o in outputs] == [0, 0, 0, 1, 0, 0, 0, 1, 0, 1]
    for output in outputs:
        assert MARKER not in output.stdout and MARKER not in output.stderr
    assert "***" in json.loads(outputs[4].stdout)["database"]
