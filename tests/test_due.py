"""Due semantics end to end (runner + tracking table), with time-machine, on every database."""

from __future__ import annotations

import tomllib
from datetime import datetime, timedelta, timezone

import pytest
import time_machine

from jobs import config as config_mod
from jobs.app import App
from jobs.outcome import RunStatus, Trigger
from jobs.registry import builtin_specs
from jobs.runner import run_job
from jobs.tracking import history
from tests.conftest import refusing_table

JOB = "refresh-token-cleanup"
DAY0 = datetime(2026, 3, 2, tzinfo=timezone.utc)


@pytest.fixture
def make_app(engine, db_url, tmp_path):
    apps = []

    def make(toml: str = "") -> App:
        cfg = config_mod.load(tomllib.loads(toml), builtin_specs(),
                              environ={"CRONWARDEN_LOCK_DIR": str(tmp_path / "locks")}, database_url=db_url)
        app = App(cfg)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.close()


def tick(app: App, when: datetime, trigger: Trigger = Trigger.SCHEDULED) -> RunStatus:
    with time_machine.travel(when, tick=False):
        return run_job(app, JOB, trigger).status


def runs(app: App) -> list:
    return list(reversed(history(app.engine, JOB, 10_000)))


def test_never_run_job_is_due_and_then_not_due(make_app):
    app = make_app()
    assert tick(app, DAY0) is RunStatus.SUCCEEDED
    assert tick(app, DAY0 + timedelta(hours=23)) is RunStatus.NOT_DUE
    assert tick(app, DAY0 + timedelta(hours=24)) is RunStatus.SUCCEEDED


def test_daily_crontab_with_24h_interval_runs_every_day_despite_start_jitter(make_app):
    app = make_app('[jobs.refresh-token-cleanup]\ninterval = "24h"\nhistory = "all"\n')
    for day, delay in enumerate([30, 1, 17, 2, 29]):
        at_three = DAY0 + timedelta(days=day, hours=3)
        assert tick(app, at_three + timedelta(seconds=delay)) is RunStatus.SUCCEEDED, f"day {day}"
        assert tick(app, at_three + timedelta(minutes=1)) is RunStatus.NOT_DUE
    assert len(runs(app)) == 5


def test_cron_schedule_with_a_tick_every_minute_runs_once_a_day(make_app):
    app = make_app('[jobs.refresh-token-cleanup]\ncron = "0 3 * * *"\n')
    ran = []
    start = DAY0 + timedelta(hours=12)
    for minute in range(2 * 24 * 60):
        when = start + timedelta(minutes=minute, seconds=2)
        near_three = abs((when - when.replace(hour=3, minute=0, second=0)).total_seconds()) < 6 * 60
        if not near_three and minute % 60:
            continue  # every minute near 03:00, every hour elsewhere keeps the test quick
        if tick(app, when) is RunStatus.SUCCEEDED:
            ran.append(when)
    # the first tick runs (never ran before); then exactly 03:00 on each following day
    assert ran == [start + timedelta(seconds=2), DAY0 + timedelta(days=1, hours=3, seconds=2),
                   DAY0 + timedelta(days=2, hours=3, seconds=2)]


def test_three_days_of_downtime_give_exactly_one_catch_up_run(make_app):
    app = make_app('[jobs.refresh-token-cleanup]\ninterval = "24h"\n')
    assert tick(app, DAY0 + timedelta(hours=3)) is RunStatus.SUCCEEDED
    back = DAY0 + timedelta(days=3, hours=14)
    statuses = [tick(app, back + timedelta(minutes=m)) for m in range(0, 120, 5)]
    assert statuses.count(RunStatus.SUCCEEDED) == 1
    assert statuses[0] is RunStatus.SUCCEEDED
    assert tick(app, DAY0 + timedelta(days=4, hours=3, seconds=5)) is RunStatus.SUCCEEDED


def test_failing_job_retries_after_60_300_900_seconds_then_waits_for_its_schedule(make_app, db_url):
    refusing_table(db_url)
    app = make_app('[jobs.refresh-token-cleanup]\ninterval = "24h"\ntable = "nope"\n')
    start = DAY0 + timedelta(hours=3)
    failed_at = []
    for step in range(0, 2 * 3600, 10):
        when = start + timedelta(seconds=step)
        if tick(app, when) is RunStatus.FAILED:
            failed_at.append(step)
    assert failed_at == [0, 60, 360, 1260]
    # retries spent: the next attempt is the schedule's, one interval after the last attempt
    assert tick(app, start + timedelta(days=1, seconds=1100)) is RunStatus.NOT_DUE
    assert tick(app, start + timedelta(days=1, seconds=1260)) is RunStatus.FAILED
    last = runs(app)[-1]
    assert last["status"] == "failed" and "nope" in last["error"]


def test_a_forced_run_does_not_move_the_nightly_schedule(make_app):
    app = make_app('[jobs.refresh-token-cleanup]\ninterval = "24h"\nhistory = "all"\n')
    assert tick(app, DAY0 + timedelta(hours=3)) is RunStatus.SUCCEEDED
    assert tick(app, DAY0 + timedelta(hours=15), Trigger.FORCED) is RunStatus.SUCCEEDED
    assert tick(app, DAY0 + timedelta(days=1, hours=3)) is RunStatus.SUCCEEDED
    assert [r["trigger"] for r in runs(app)] == ["scheduled", "forced", "scheduled"]


def test_paused_job_skips_until_resumed_but_force_still_runs(make_app):
    from jobs.tracking import set_paused

    app = make_app()
    set_paused(app.engine, JOB, True, "ops", DAY0)
    assert tick(app, DAY0) is RunStatus.PAUSED
    assert tick(app, DAY0, Trigger.FORCED) is RunStatus.SUCCEEDED
    set_paused(app.engine, JOB, False, "ops", DAY0)
    assert tick(app, DAY0 + timedelta(days=1)) is RunStatus.SUCCEEDED


def test_disabled_job_is_skipped_without_touching_the_database(make_app):
    app = make_app('[jobs.refresh-token-cleanup]\nenabled = false\n')
    assert tick(app, DAY0) is RunStatus.DISABLED
    assert app._engine is None
