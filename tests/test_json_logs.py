"""`--log-format json`: one parseable object per line, with the job and run id, and never a secret."""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime

import pytest
from sqlalchemy.engine import make_url

from cli.logs import JsonFormatter
from jobs.observe.pings import PingObserver
from jobs.secrets import Secret, remember
from tests.conftest import Workspace, refusing_table
from tests.test_pings import dead_url

JOB = "refresh-token-cleanup"


def json_lines(stderr: str) -> list[dict]:
    """Every line of stderr as JSON (fails on a line that is not)."""
    return [json.loads(line) for line in stderr.splitlines() if line.strip()]


def test_json_log_lines_carry_job_run_id_level_time_and_event(sqlite_workspace, cli) -> None:
    result = cli(sqlite_workspace, "--log-format", "json", JOB, "--force", "--json")
    assert result.exit_code == 0, result.stderr
    lines = json_lines(result.stderr)
    run_id = json.loads(result.stdout)["run_id"]
    assert {"time", "level", "job", "run_id", "event"} <= set(lines[0])
    events = [(e["level"], e["job"], e["run_id"], e["event"].split()[0]) for e in lines]
    assert ("info", JOB, run_id, "started") in events
    assert ("info", JOB, run_id, "succeeded") in events
    assert all(datetime.fromisoformat(e["time"]).utcoffset() is not None for e in lines)


def test_failed_run_logs_an_error_line_with_the_error(sqlite_workspace, cli) -> None:
    refusing_table(sqlite_workspace.db_url)
    sqlite_workspace.write_config(f'[jobs.{JOB}]\ntable = "nope"\n')
    result = cli(sqlite_workspace, "--log-format", "json", JOB, "--force")
    assert result.exit_code == 1
    [error] = [e for e in json_lines(result.stderr) if e["level"] == "error"]
    assert error["job"] == JOB
    assert isinstance(error["run_id"], int)
    assert "nope" in error["event"]


def test_text_is_the_default_log_format(sqlite_workspace, cli) -> None:
    result = cli(sqlite_workspace, JOB, "--force")
    assert result.exit_code == 0
    first = result.stderr.splitlines()[0]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO refresh-token-cleanup run=\d+: started", first)


def test_json_formatter_masks_registered_secrets_and_url_passwords() -> None:
    smtp = Secret("smtp-marker-5521")
    remember("http://127.0.0.1:9/ping/ping-key-marker")
    record = logging.LogRecord("cronwarden.job", logging.WARNING, __file__, 1,
                               "connect %s as %s via %s", ("postgresql://app:db-pw-marker@db/app", smtp.reveal(),
                                                           "http://127.0.0.1:9/ping/ping-key-marker/fail"), None)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["event"] == "connect postgresql://app:***@db/app as *** via ***/fail"


def test_json_logs_of_a_failing_observed_run_show_no_secret(pg_url, tmp_path, cli, monkeypatch) -> None:
    monkeypatch.setattr(PingObserver, "backoff", 0.01)
    url = make_url(pg_url).set(password="db-pw-marker-3141").render_as_string(hide_password=False)
    ws = Workspace(tmp_path, url).upgrade()
    refusing_table(url)
    ping = f"{dead_url()}/ping/ping-key-marker-2718"
    ws.write_config(f'[jobs.{JOB}]\ntable = "nope"\nping_url = "{ping}"\n')
    gateway = f"http://pusher:push-pw-marker-1618@{dead_url().removeprefix('http://')}"
    result = cli(ws, "--log-format", "json", "--verbose", "--pushgateway", gateway, JOB, "--force", "--json",
                 env={"CRONWARDEN_SMTP_PASSWORD": "smtp-pw-marker-1414"})
    assert result.exit_code == 1
    lines = json_lines(result.stderr)
    events = " ".join(e["event"] for e in lines)
    assert "dead-man ping (start) not delivered" in events
    assert "pushing metrics to the Pushgateway failed" in events
    assert any(e["level"] == "debug" and "traceback" in e for e in lines)
    output = result.stdout + result.stderr
    for marker in ("db-pw-marker-3141", "ping-key-marker-2718", "push-pw-marker-1618", "smtp-pw-marker-1414"):
        assert marker not in output


ERROR_PATHS = {
    "config error": (["--config", "missing.toml", "status"], 78),
    "usage error": (["no-such-command"], 2),
    "usage error after the subcommand": (["status", "--no-such-option"], 2),
    "database unavailable": (["--database-url", "postgresql://cw:pw@127.0.0.1:9/none", "status"], 75),
    "job failure": (["test-fail"], 1),
    "failure raised by a command": (["queue", "show", "999"], 2),
}


@pytest.mark.parametrize("path", list(ERROR_PATHS))
def test_under_json_every_stderr_line_is_json_including_the_final_error(path, sqlite_workspace, cli) -> None:
    sqlite_workspace.plugins = True
    sqlite_workspace.write_config('[retry]\nattempts = 2\ninitial_wait = "0.1s"\nmax_time = "1s"\n')
    args, code = ERROR_PATHS[path]
    result = cli(sqlite_workspace, "--log-format", "json", *args)
    assert result.exit_code == code, result.stderr
    lines = json_lines(result.stderr)
    assert lines and lines[-1]["level"] == "error", result.stderr
    assert "pw@" not in result.stderr
