"""Misfire policy per job: `catch_up = "one"` owes one catch-up run after downtime; `catch_up = "none"` skips
slots missed by more than `catch_up_window`, waits for the next slot, and counts what it skipped in the
tracking row, `status` and the metrics (never silently)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import time_machine
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from jobs import config as config_mod
from jobs.catch_up import slots_between, stale_slot
from jobs.models import executions, runs
from jobs.registry import builtin_specs
from jobs.schedule import DueState, is_due

T0 = datetime(2026, 5, 4, 3, 0, tzinfo=timezone.utc)  # a slot of cron "0 3 * * *"
JOB = "refresh-token-cleanup"
OTHERS_OFF = "[jobs.ip-anonymization]\nenabled = false\n[jobs.email-queue]\nenabled = false\n" \
             "[jobs.log-cleanup]\nenabled = false\n"
ONE_DAILY = OTHERS_OFF + f'[jobs.{JOB}]\nhistory = "all"\ncron = "0 3 * * *"\n'
NONE_DAILY = ONE_DAILY + 'catch_up = "none"\ncatch_up_window = "30m"\n'


def at(when: datetime):
    return time_machine.travel(when, tick=False)


def tick(cli, ws) -> dict:
    result = cli(ws, JOB, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def row(engine) -> dict:
    with engine.connect() as conn:
        found = conn.execute(select(executions).where(executions.c.job_name == JOB)).mappings().one()
        return {**found, "runs": conn.execute(select(func.count()).select_from(runs)).scalar()}  # history = "all"


def status_of(cli, ws) -> dict:
    return {j["name"]: j for j in json.loads(cli(ws, "status", "--json").stdout)["jobs"]}[JOB]


def missed_metric(cli, ws) -> float:
    text = cli(ws, "metrics").stdout
    return next(s.value for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "cronwarden_job_missed_slots_total" and s.labels["job_name"] == JOB)


def test_none_skips_a_slot_missed_beyond_the_window_and_runs_the_next(workspace, engine, cli):
    workspace.write_config(NONE_DAILY)
    with at(T0 + timedelta(seconds=10)):
        assert tick(cli, workspace)["status"] == "succeeded"
    late = T0 + timedelta(days=3, hours=2)  # slots of days 1, 2 and 3 missed; day 3's is 2 h old (> 30m)
    with at(late):
        assert status_of(cli, workspace)["state"] == "overdue"  # no tick yet: stopped ticks are not hidden
        report = tick(cli, workspace)
        again = tick(cli, workspace)
        after = status_of(cli, workspace)
        assert cli(workspace, "check").exit_code == 0
        assert missed_metric(cli, workspace) == 3
    assert report["status"] == "not_due" and report["next_due_at"] == (T0 + timedelta(days=4)).isoformat()
    assert again["status"] == "not_due"
    stored = row(engine)
    assert stored["missed_slots"] == 3 and stored["runs"] == 1
    assert stored["schedule_slot_at"] == T0 + timedelta(days=3)
    assert after["state"] == "ok" and after["missed_slots"] == 3
    with at(T0 + timedelta(days=4, seconds=5)):
        assert tick(cli, workspace)["status"] == "succeeded"
    assert row(engine)["missed_slots"] == 3 and row(engine)["runs"] == 2


def test_none_runs_the_latest_slot_within_the_window_and_counts_the_earlier_ones(workspace, engine, cli):
    workspace.write_config(NONE_DAILY)
    with at(T0 + timedelta(seconds=10)):
        assert tick(cli, workspace)["status"] == "succeeded"
    with at(T0 + timedelta(days=3, minutes=20)):
        assert tick(cli, workspace)["status"] == "succeeded"
        assert tick(cli, workspace)["status"] == "not_due"
        shown = status_of(cli, workspace)
        assert missed_metric(cli, workspace) == 2
    stored = row(engine)
    assert stored["missed_slots"] == 2 and stored["runs"] == 2  # days 1 and 2 skipped, day 3's slot ran
    assert stored["schedule_slot_at"] == T0 + timedelta(days=3)
    assert shown["state"] == "ok" and shown["missed_slots"] == 2


def test_one_keeps_a_single_catch_up_run(workspace, engine, cli):
    workspace.write_config(ONE_DAILY)
    with at(T0 + timedelta(seconds=10)):
        assert tick(cli, workspace)["status"] == "succeeded"
    with at(T0 + timedelta(days=3, hours=2)):
        assert tick(cli, workspace)["status"] == "succeeded"
        report = tick(cli, workspace)
        shown = status_of(cli, workspace)
        assert missed_metric(cli, workspace) == 0
    assert report["status"] == "not_due" and report["next_due_at"] == (T0 + timedelta(days=4)).isoformat()
    stored = row(engine)
    assert stored["runs"] == 2 and stored["missed_slots"] == 0  # a collapsed slot is caught up, not given up
    assert shown["missed_slots"] == 0


def test_none_skips_on_an_interval_grid_too(workspace, engine, cli):
    workspace.write_config(OTHERS_OFF + f'[jobs.{JOB}]\ninterval = "6h"\ncatch_up = "none"\n'
                                        'catch_up_window = "10m"\n')
    with at(T0):
        assert tick(cli, workspace)["status"] == "succeeded"
    with at(T0 + timedelta(hours=13)):  # slots +6h and +12h missed, the latest 1 h old
        report = tick(cli, workspace)
    assert report["status"] == "not_due" and report["next_due_at"] == (T0 + timedelta(hours=18)).isoformat()
    assert row(engine)["missed_slots"] == 2
    with at(T0 + timedelta(hours=18, seconds=30)):
        assert tick(cli, workspace)["status"] == "succeeded"
    assert row(engine)["missed_slots"] == 2 and row(engine)["schedule_slot_at"] == T0 + timedelta(hours=18)


def test_a_forced_run_is_never_skipped(workspace, engine, cli):
    workspace.write_config(NONE_DAILY)
    with at(T0 + timedelta(seconds=10)):
        assert tick(cli, workspace)["status"] == "succeeded"
    with at(T0 + timedelta(days=2, hours=5)):
        forced = cli(workspace, JOB, "--force", "--json")
    assert forced.exit_code == 0 and json.loads(forced.stdout)["status"] == "succeeded"
    assert row(engine)["missed_slots"] == 1  # day 1's slot; day 2's is the one the forced run stood for


def _job(toml: str):
    import tomllib

    return config_mod.load(tomllib.loads(toml), builtin_specs(), database_url="sqlite:///x.db").job(JOB)


@pytest.mark.parametrize(("late", "runs"), [(timedelta(minutes=59), True), (timedelta(minutes=61), False)])
def test_the_default_window_is_the_jobs_grace(late: timedelta, runs: bool):
    """A daily job's default grace is 1 h: a tick 59 minutes after the slot runs it, 61 minutes skips it."""
    job = _job(f'[jobs.{JOB}]\ncron = "0 3 * * *"\ncatch_up = "none"\n')
    assert job.catch_up_window == job.grace == timedelta(hours=1)
    state = DueState(last_slot_at=T0)
    now = T0 + timedelta(days=1) + late
    assert is_due(job.schedule, state, now)
    assert (stale_slot(job.schedule, state, now, job.catch_up_window) is None) is runs


def test_one_has_no_window_and_a_backoff_retry_is_never_stale():
    assert _job(f'[jobs.{JOB}]\ncron = "0 3 * * *"\n').catch_up_window is None
    job = _job(f'[jobs.{JOB}]\ncron = "0 3 * * *"\ncatch_up = "none"\ncatch_up_window = "1m"\n')
    retry = DueState(last_slot_at=T0, consecutive_failures=1, next_retry_at=T0 + timedelta(days=1, minutes=1))
    assert stale_slot(job.schedule, retry, T0 + timedelta(days=1, hours=3), timedelta(minutes=1)) is None


def test_slots_between_counts_cron_fires_and_interval_grid_points():
    cron = _job(f'[jobs.{JOB}]\ncron = "* * * * *"\n').schedule
    assert slots_between(cron, None, T0, T0 + timedelta(minutes=5)) == 5
    week = slots_between(cron, None, T0, T0 + timedelta(days=7))  # past the exact count: estimated
    assert week == 7 * 24 * 60
    interval = _job(f'[jobs.{JOB}]\ninterval = "6h"\n').schedule
    assert slots_between(interval, T0, T0, T0 + timedelta(hours=12)) == 2
    assert slots_between(interval, T0, T0 + timedelta(hours=6), T0 + timedelta(hours=17)) == 1


BAD = [
    ("unknown policy", 'catch_up = "all"\n', "catch_up"),
    ("policy not a string", "catch_up = 1\n", "catch_up"),
    ("window without none", 'catch_up_window = "5m"\n', "catch_up_window"),
    ("zero window", 'catch_up = "none"\ncatch_up_window = "0s"\n', "catch_up_window"),
    ("window too short", 'catch_up = "none"\ncatch_up_window = "500ms"\n', "catch_up_window"),
    ("window not a duration", 'catch_up = "none"\ncatch_up_window = "soon"\n', "catch_up_window"),
]


@pytest.mark.backend_neutral
@pytest.mark.parametrize(("case", "toml", "key"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_catch_up_value_is_one_config_error_naming_the_key(workspace, cli, case, toml, key):
    workspace.write_config(f"[jobs.{JOB}]\n{toml}")
    result = cli(workspace, JOB)
    assert result.exit_code == 78, (case, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"[jobs.{JOB}] {key}:" in lines[0], lines


def test_a_one_shot_job_refuses_catch_up_none(sqlite_workspace, cli):
    sqlite_workspace.write_config('[jobs.admin-seed]\ncatch_up = "none"\n')
    result = cli(sqlite_workspace, "list")
    assert result.exit_code == 78 and "[jobs.admin-seed] catch_up:" in result.stderr, result.stderr


def test_a_backoff_retry_is_run_late_not_skipped(workspace, engine, cli):
    """A failed slot's retry is the job's backoff, not a catch-up: it runs however late its tick comes."""
    logs = workspace.path / "logs"
    logs.mkdir()
    not_a_folder = workspace.path / "not-a-folder"
    not_a_folder.write_text("")
    job = 'cron = "0 3 * * *"\ncatch_up = "none"\ncatch_up_window = "10m"\ntable = ""\n'

    def run_log_cleanup(folder) -> dict:
        workspace.write_config(f'[jobs.log-cleanup]\n{job}log_directory = "{folder}"\n')
        return json.loads(cli(workspace, "log-cleanup", "--json").stdout)

    with at(T0 + timedelta(seconds=10)):
        assert run_log_cleanup(logs)["status"] == "succeeded"
    with at(T0 + timedelta(days=1, seconds=5)):
        assert run_log_cleanup(not_a_folder)["status"] == "failed"
    with at(T0 + timedelta(days=1, hours=2)):  # the 60 s retry, 2 h late: past the window, run all the same
        retried = run_log_cleanup(not_a_folder)
    assert retried["status"] == "failed" and retried["run_id"] is not None
    with engine.connect() as conn:
        stored = conn.execute(select(executions).where(executions.c.job_name == "log-cleanup")).mappings().one()
    assert stored["consecutive_failures"] == 2 and stored["missed_slots"] == 0
