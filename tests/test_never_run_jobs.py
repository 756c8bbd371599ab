"""A job that never succeeds cannot hide: `check` calls it overdue once its first slot, counted from when the
database first knew the job, plus its grace has passed (a missing crontab line raises an alarm)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import time_machine

T0 = datetime(2026, 5, 4, 10, 0, tzinfo=timezone.utc)
ONLY_TOKENS = """
[jobs.ip-anonymization]
enabled = false
[jobs.email-queue]
enabled = false
[jobs.log-cleanup]
enabled = false
[jobs.refresh-token-cleanup]
grace = "1h"
"""


def at(when: datetime):
    return time_machine.travel(when, tick=False)


def states(cli, ws) -> dict[str, dict]:
    report = json.loads(cli(ws, "check", "--json").stdout)
    return {j["job"]: j for j in report["jobs"]}


def test_a_job_that_never_runs_is_overdue_after_its_first_slot_plus_grace(workspace, cli):
    workspace.write_config(ONLY_TOKENS)
    with at(T0):
        assert cli(workspace, "db", "upgrade").exit_code == 0
    with at(T0 + timedelta(minutes=59)):
        on_time = cli(workspace, "check")
    assert on_time.exit_code == 0 and on_time.stdout.startswith("OK")
    with at(T0 + timedelta(minutes=61)):
        late = cli(workspace, "check")
        job = states(cli, workspace)["refresh-token-cleanup"]
    assert late.exit_code == 1
    assert late.stdout.startswith("OVERDUE refresh-token-cleanup: overdue by 60s: never succeeded since")
    assert "2026-05-04 10:00:00" in late.stdout
    assert job["state"] == "overdue" and job["overdue_seconds"] == 60
    with at(T0 + timedelta(minutes=62)):
        assert cli(workspace, "refresh-token-cleanup").exit_code == 0
        assert cli(workspace, "check").exit_code == 0


def test_check_itself_starts_the_clock_of_a_job_the_database_did_not_know(workspace, cli):
    workspace.write_config(ONLY_TOKENS)
    with at(T0):
        first = json.loads(cli(workspace, "status", "--json").stdout)
    job = {j["name"]: j for j in first["jobs"]}["refresh-token-cleanup"]
    assert job["state"] == "pending" and job["first_seen_at"].startswith("2026-05-04T10:00:00")
    with at(T0 + timedelta(hours=2)):
        assert states(cli, workspace)["refresh-token-cleanup"]["state"] == "overdue"


def test_a_cron_job_is_first_owed_a_run_at_its_first_fire_time(workspace, cli):
    workspace.write_config(ONLY_TOKENS + 'cron = "0 3 * * *"\n')
    with at(T0):
        cli(workspace, "db", "upgrade")
    with at(datetime(2026, 5, 5, 3, 59, tzinfo=timezone.utc)):
        assert states(cli, workspace)["refresh-token-cleanup"]["state"] == "pending"
    with at(datetime(2026, 5, 5, 4, 1, tzinfo=timezone.utc)):
        assert states(cli, workspace)["refresh-token-cleanup"]["state"] == "overdue"


def test_a_one_shot_job_run_at_deploy_time_stays_pending(workspace, cli):
    workspace.write_config(ONLY_TOKENS)
    with at(T0):
        cli(workspace, "db", "upgrade")
    with at(T0 + timedelta(days=30)):
        assert states(cli, workspace)["admin-seed"]["state"] == "pending"


def test_an_interrupted_first_run_still_owes_its_first_slot(workspace, cli, engine):
    from sqlalchemy import update

    from jobs.models import executions

    workspace.write_config(ONLY_TOKENS)
    with at(T0):
        cli(workspace, "db", "upgrade")
    with engine.begin() as conn:
        conn.execute(update(executions).where(executions.c.job_name == "refresh-token-cleanup")
                     .values(last_status="interrupted"))
    with at(T0 + timedelta(minutes=30)):
        assert states(cli, workspace)["refresh-token-cleanup"]["state"] == "pending"
    with at(T0 + timedelta(minutes=61)):
        assert states(cli, workspace)["refresh-token-cleanup"]["state"] == "overdue"


def test_db_upgrade_adds_first_seen_to_a_tracking_table_of_an_older_version(workspace, cli, engine):
    from sqlalchemy import inspect

    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE recurring_job_executions DROP COLUMN first_seen_at")
        conn.exec_driver_sql("UPDATE cronwarden_schema SET version = 2")
    result = cli(workspace, "db", "upgrade")
    assert result.exit_code == 0
    assert "added column recurring_job_executions.first_seen_at" in result.stdout
    with engine.connect() as conn:
        assert "first_seen_at" in {c["name"] for c in inspect(conn).get_columns("recurring_job_executions")}


def test_the_first_run_notes_the_job_and_a_later_one_keeps_the_first_sighting(workspace, cli):
    workspace.write_config(ONLY_TOKENS)

    def first_seen() -> str:
        with at(T0 + timedelta(hours=1)):  # status notes a job it does not know: it would say 11:00
            report = json.loads(cli(workspace, "status", "--json").stdout)
        return {j["name"]: j for j in report["jobs"]}["refresh-token-cleanup"]["first_seen_at"]

    with at(T0):
        assert cli(workspace, "refresh-token-cleanup").exit_code == 0
    assert first_seen().startswith("2026-05-04T10:00:00")
    with at(T0 + timedelta(days=1)):
        assert cli(workspace, "refresh-token-cleanup").exit_code == 0
        assert cli(workspace, "db", "upgrade").exit_code == 0
    assert first_seen().startswith("2026-05-04T10:00:00")
