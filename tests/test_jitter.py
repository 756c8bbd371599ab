"""Per-job `jitter` (jobs/jitter.py): a scheduled run waits a per-slot random delay before it takes the lock.

The delay is drawn from (host, job, slot), so a test knows this host's draw in advance and picks the
jitter that makes it a known length. The waits run in real CLI processes (signals, locks); the wait runs
no SQL, so those tests run on SQLite, and the one about the lock on SQLite and PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import socket
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from jobs.config import load
from jobs.errors import ConfigError
from jobs.jitter import delay
from jobs.models import runs
from jobs.registry import builtin_specs
from tests.conftest import Workspace

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _job(**keys: object):
    return load({"jobs": {"email-queue": keys}}, builtin_specs(), environ={}, database_url="sqlite://").job(
        "email-queue")


def _config_for_a_wait_of(seconds: float) -> str:
    """email-queue every 7 days with the jitter that makes this host's draw for its first run `seconds` long."""
    unit = delay(dataclasses.replace(_job(), jitter=timedelta(seconds=1)), socket.gethostname(), None)
    fraction = unit.total_seconds()
    assert fraction > 1e-5, "this host's draw is too close to zero to test with"
    return (f'[jobs.email-queue]\ninterval = "7d"\njitter = "{seconds / fraction:.6f}s"\ntransport = "file"\n'
            'file_directory = "outbox"\nhistory = "all"\n')


def _runs(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(runs).order_by(runs.c.id)).mappings()]


def _read_until(proc: subprocess.Popen, word: str) -> None:
    """Read the process's log lines until one contains `word` (the runner logs each step)."""
    assert proc.stderr is not None
    for line in proc.stderr:
        if word in line:
            return
    raise AssertionError(f"the process ended without logging {word!r}: {proc.wait()}")


@pytest.mark.parametrize(("keys", "message"), [
    ({"interval": "10s", "jitter": "10s"}, "[jobs.email-queue] jitter: must be shorter than the schedule's period"),
    ({"interval": "10s", "jitter": "1m"}, "[jobs.email-queue] jitter: must be shorter than the schedule's period"),
    ({"cron": "*/5 * * * *", "jitter": "5m"}, "[jobs.email-queue] jitter: must be shorter than the schedule's "
                                              "period (5m)"),
    ({"interval": "10s", "jitter": "soon"}, "[jobs.email-queue] jitter: not a duration"),
    ({"interval": "once", "jitter": "1s"}, "[jobs.email-queue] jitter: only applies to a recurring schedule"),
])
def test_jitter_must_be_a_duration_shorter_than_the_period(keys: dict, message: str):
    with pytest.raises(ConfigError) as caught:
        _job(**keys)
    assert str(caught.value).startswith(message), caught.value


def test_jitter_defaults_to_zero_and_accepts_a_delay_under_the_period():
    assert _job().jitter == timedelta(0)
    assert _job(interval="10s", jitter="0s").jitter == timedelta(0)
    assert _job(cron="*/5 * * * *", jitter="4m59s").jitter == timedelta(minutes=4, seconds=59)


@pytest.mark.backend_neutral
def test_a_bad_jitter_is_one_configuration_line_and_exit_78(cli, workspace: Workspace):
    workspace.write_config('[jobs.email-queue]\ninterval = "10s"\njitter = "20s"\n')
    result = cli(workspace, "email-queue")
    assert result.exit_code == 78
    assert len(result.stderr.strip().splitlines()) == 1 and "jitter" in result.stderr, result.stderr


def test_the_delay_is_within_bounds_and_drawn_per_host_job_and_slot():
    job = _job(interval="10s", jitter="8s")
    base = datetime(2026, 12, 6, 3, 0, tzinfo=timezone.utc)
    slots = [base + timedelta(seconds=10 * n) for n in range(500)]
    draws = [delay(job, "host-a", slot) for slot in slots]
    assert all(timedelta(0) <= d < timedelta(seconds=8) for d in draws)
    assert min(draws) < timedelta(seconds=1) and max(draws) > timedelta(seconds=7), "spread over the window"
    assert draws == [delay(job, "host-a", slot) for slot in slots], "every tick of a slot on a host agrees"
    other = [delay(job, "host-b", slot) for slot in slots]
    assert sum(a != b for a, b in zip(draws, other)) > 490, "hosts draw differently"
    assert delay(_job(interval="10s"), "host-a", base) == timedelta(0)


@SQLITE
def test_a_scheduled_run_starts_after_its_jitter(workspace: Workspace, engine):
    workspace.write_config(_config_for_a_wait_of(1.5))
    launched = datetime.now(timezone.utc)
    result = workspace.run("email-queue", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "succeeded"
    waited = (datetime.fromisoformat(report["started_at"]) - launched).total_seconds()
    assert 1.5 <= waited < 1.5 + 5, waited
    assert "waiting 1.500s (jitter) before starting" in result.stderr


@SQLITE
def test_forced_runs_and_dry_runs_never_wait(workspace: Workspace, engine):
    workspace.write_config(_config_for_a_wait_of(30))
    for args in (("--force",), ("--dry-run",)):
        started = time.monotonic()
        result = workspace.run("email-queue", *args, "--json", timeout=20)
        assert result.returncode == 0, result.stderr
        assert "jitter" not in result.stderr
        assert time.monotonic() - started < 15


@SQLITE
def test_a_not_due_tick_never_waits(workspace: Workspace, engine):
    workspace.write_config(_config_for_a_wait_of(30))
    assert workspace.run("email-queue", "--force").returncode == 0
    started = time.monotonic()
    result = workspace.run("email-queue", "--json", timeout=20)
    assert json.loads(result.stdout)["status"] == "not_due"
    assert "jitter" not in result.stderr and time.monotonic() - started < 15


@pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)
def test_no_lock_is_held_while_waiting(workspace: Workspace, engine):
    from tests.locks_helpers import can_take_now

    workspace.write_config(_config_for_a_wait_of(3))
    waiting = workspace.popen("email-queue", "--json")
    _read_until(waiting, "jitter")
    assert can_take_now(workspace, "email-queue"), "the waiting tick held the lock"
    out, err = waiting.communicate(timeout=20)
    assert waiting.returncode == 0, err
    assert json.loads(out)["status"] == "succeeded", "the lock is taken once the wait ends"


@SQLITE
def test_sigterm_while_waiting_records_no_run_and_exits_143(workspace: Workspace, engine):
    workspace.write_config(_config_for_a_wait_of(30))
    waiting = workspace.popen("email-queue")
    _read_until(waiting, "jitter")
    signalled = time.monotonic()
    waiting.send_signal(signal.SIGTERM)
    _, err = waiting.communicate(timeout=10)
    assert waiting.returncode == 143, err
    assert time.monotonic() - signalled < 5, "it waited on (30 s were left)"
    assert _runs(engine) == []


@SQLITE
def test_sigterm_while_a_for_loop_waits_for_jitter_ends_the_loop_with_143(workspace: Workspace, engine):
    workspace.write_config(_config_for_a_wait_of(30))
    loop = workspace.popen("email-queue", "--for", "50s")
    _read_until(loop, "jitter")
    loop.send_signal(signal.SIGTERM)
    _, err = loop.communicate(timeout=10)
    assert loop.returncode == 143, err
    assert _runs(engine) == []
