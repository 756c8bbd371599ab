"""A job's `history` setting: idle scheduled runs leave no history row by default; the tracking row still moves."""

from __future__ import annotations

import json
import socket
from datetime import datetime, timedelta, timezone

import pytest
import time_machine

from jobs import tracking
from jobs.config import load
from jobs.outcome import Trigger
from jobs.registry import builtin_specs
from tests.app_data import add_tokens
from tests.conftest import refusing_table

JOB = "refresh-token-cleanup"
T0 = datetime(2026, 5, 1, 3, 0, tzinfo=timezone.utc)


def _runs(cli, ws) -> list[dict]:
    return json.loads(cli(ws, "history", JOB, "--json").stdout)["runs"]


def _state(cli, ws) -> dict:
    return {j["name"]: j for j in json.loads(cli(ws, "status", "--json").stdout)["jobs"]}[JOB]


def test_an_idle_scheduled_run_updates_the_tracking_row_but_leaves_no_history_row(workspace, engine, cli) -> None:
    with time_machine.travel(T0, tick=False):
        assert cli(workspace, JOB).exit_code == 0
        assert _runs(cli, workspace) == []
        state = _state(cli, workspace)
        assert state["last_status"] == "succeeded" and state["state"] == "ok"
        assert state["last_executed_at"].startswith("2026-05-01T03:00:00")
        metrics = cli(workspace, "metrics").stdout
        assert f'cronwarden_job_history_runs{{job_name="{JOB}",status="succeeded"}} 0' in metrics
        assert f'cronwarden_job_last_success_timestamp_seconds{{job_name="{JOB}"}} {T0.timestamp():.1f}' in metrics
    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        add_tokens(engine, T0 + timedelta(days=1), expired=3, fresh=0)
        assert cli(workspace, JOB).exit_code == 0
        [worked] = _runs(cli, workspace)
        assert worked["counts"] == {"deleted": 3} and worked["trigger"] == "scheduled"
        assert cli(workspace, JOB, "--force").exit_code == 0
        assert [r["trigger"] for r in _runs(cli, workspace)] == ["forced", "scheduled"], "an operator's run is kept"


def test_history_all_keeps_every_run(workspace, cli) -> None:
    workspace.write_config(f'[jobs.{JOB}]\nhistory = "all"\n')
    assert cli(workspace, JOB).exit_code == 0
    [run] = _runs(cli, workspace)
    assert run["status"] == "succeeded" and run["counts"] == {"deleted": 0}


def test_a_failed_idle_run_is_always_kept(workspace, cli) -> None:
    refusing_table(workspace.db_url)
    workspace.write_config(f'[jobs.{JOB}]\ntable = "nope"\n')
    assert cli(workspace, JOB).exit_code == 1
    assert [r["status"] for r in _runs(cli, workspace)] == ["failed"]


@pytest.mark.backend_neutral
def test_an_unknown_history_value_is_a_configuration_error(workspace, cli) -> None:
    workspace.write_config(f'[jobs.{JOB}]\nhistory = "none"\n')
    result = cli(workspace, JOB)
    assert result.exit_code == 78
    assert "history: must be one of work, all" in result.stderr


def test_a_run_that_dies_before_its_outcome_is_still_reaped_as_abandoned(engine) -> None:
    job = load({}, builtin_specs(), environ={}).job(JOB)
    assert job.history.runs == "work"
    run_id = tracking.start_run(engine, job, Trigger.SCHEDULED, T0, socket.gethostname(), 1)
    assert tracking.reap_abandoned(engine, job, T0 + timedelta(minutes=1)) == 1
    [row] = tracking.history(engine, JOB, 10)
    assert row["id"] == run_id and row["status"] == "abandoned"
