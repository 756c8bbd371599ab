"""`--for DURATION` (jobs/ticking.py): one process ticks its jobs on their slots until the time is up.

Real CLI processes where signals, locks and pids matter. The loop itself runs no SQL (each round is the
runner's, tested on all three databases elsewhere), so the process tests run on SQLite and PostgreSQL;
the lock-between-runs test runs on all three, since each has its own lock backend (file, advisory,
GET_LOCK) whose release after each run is what it checks.
"""

from __future__ import annotations

import json
import signal
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from jobs.models import runs
from jobs.outcome import RunReport, RunStatus
from tests.conftest import Workspace
from tests.locks_helpers import can_take_now

pytestmark = pytest.mark.slow
TWO_DBS = pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)
EMAIL = '[jobs.email-queue]\ninterval = "{every}"\nhistory = "all"\ntransport = "file"\nfile_directory = "outbox"\n'


def _runs(engine, job: str = "email-queue") -> list[dict]:
    """Read in autocommit: on SQLite a poll then never queues for the write lock behind a run's batches."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        return [dict(r) for r in conn.execute(select(runs).where(runs.c.job_name == job).order_by(runs.c.id))
                .mappings()]


def _wait_for(condition, what: str, proc=None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        assert proc is None or proc.poll() is None, proc.communicate()
        time.sleep(0.02)


@TWO_DBS
def test_job_for_runs_once_per_slot_in_one_process(workspace: Workspace, engine):
    workspace.write_config(EMAIL.format(every="2s"))
    started = time.monotonic()
    result = workspace.run("email-queue", "--for", "5500ms", "--json")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    rounds = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["status"] for r in rounds] == ["succeeded"] * 3, "slots at 0 s, 2 s and 4 s of a 5.5 s window"
    done = _runs(engine)
    assert [r["trigger"] for r in done] == ["scheduled"] * 3
    assert len({r["pid"] for r in done}) == 1, "one process"
    gaps = [(b["started_at"] - a["started_at"]).total_seconds() for a, b in zip(done, done[1:])]
    assert all(1.9 <= gap <= 2.6 for gap in gaps), gaps
    assert elapsed < 5 + 10, "the loop ends at its window (plus a loaded machine's start-up)"


@TWO_DBS
def test_run_due_for_prints_one_json_object_per_round(workspace: Workspace, engine):
    workspace.write_config(EMAIL.format(every="1s") + "[jobs.ip-anonymization]\nenabled = false\n"
                           "[jobs.log-cleanup]\nenabled = false\n")
    result = workspace.run("run-due", "--for", "3s", "--json")
    assert result.returncode == 0, result.stderr
    rounds = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rounds) >= 2 and all(r["exit_code"] == 0 for r in rounds)
    statuses = [{job["job"]: job["status"] for job in r["jobs"]} for r in rounds]
    assert statuses[0] == {"refresh-token-cleanup": "succeeded", "email-queue": "succeeded"}
    assert statuses[1:] == [{"refresh-token-cleanup": "not_due", "email-queue": "succeeded"}] * (len(rounds) - 1)
    assert len({r["pid"] for r in _runs(engine)}) == 1


@pytest.mark.parametrize("db_url", ["sqlite", "postgres", "mariadb"], indirect=True)
def test_the_lock_is_held_only_while_a_run_lasts(workspace: Workspace, engine):
    workspace.write_config(EMAIL.format(every="5s"))
    loop = workspace.popen("email-queue", "--for", "7s")
    _wait_for(lambda: [r["status"] for r in _runs(engine)] == ["succeeded"], "the loop's first run", loop)
    # the run's outcome is committed a moment before its lock is released: try for 2 s of the 5 s sleep
    deadline = time.monotonic() + 2
    while not can_take_now(workspace, "email-queue"):
        assert time.monotonic() < deadline, "the loop held the lock while it slept until its next slot"
        time.sleep(0.05)
    _, err = loop.communicate(timeout=20)
    assert loop.returncode == 0, err
    assert [(r["status"], r["pid"]) for r in _runs(engine)] == [("succeeded", loop.pid)] * 2


@TWO_DBS
def test_sigterm_while_sleeping_ends_the_loop_at_once_with_143(workspace: Workspace, engine):
    workspace.write_config(EMAIL.format(every="10s"))
    loop = workspace.popen("email-queue", "--for", "30s")
    _wait_for(lambda: [r["status"] for r in _runs(engine)] == ["succeeded"], "the first run", loop)
    time.sleep(0.2)
    signalled = time.monotonic()
    loop.send_signal(signal.SIGTERM)
    _, err = loop.communicate(timeout=10)
    assert loop.returncode == 143, err
    assert time.monotonic() - signalled < 5, "it slept on (10 s were left)"
    assert [r["status"] for r in _runs(engine)] == ["succeeded"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sigint_while_sleeping_exits_130(workspace: Workspace, engine):
    workspace.write_config(EMAIL.format(every="10s"))
    loop = workspace.popen("run-due", "--for", "30s")
    _wait_for(lambda: len(_runs(engine)) == 1 and _runs(engine)[0]["status"] == "succeeded", "the first run", loop)
    loop.send_signal(signal.SIGINT)
    _, err = loop.communicate(timeout=10)
    assert loop.returncode == 130, err


@TWO_DBS
def test_sigterm_during_a_run_records_interrupted_and_stops(plugin_workspace: Workspace, engine):
    ws = plugin_workspace
    ws.write_config('[jobs.test-sleeper]\ninterval = "1s"\nbatches = 50\nbatch_seconds = 0.1\n')
    loop = ws.popen("test-sleeper", "--for", "30s")
    _wait_for(lambda: [r["status"] for r in _runs(engine, "test-sleeper")] == ["running"], "the run", loop)
    time.sleep(0.3)
    loop.send_signal(signal.SIGTERM)
    _, err = loop.communicate(timeout=20)
    assert loop.returncode == 143, err
    done = _runs(engine, "test-sleeper")
    assert [r["status"] for r in done] == ["interrupted"], "no run after the signal"
    assert "SIGTERM" in done[0]["error"]


@pytest.mark.backend_neutral
@pytest.mark.parametrize(("value", "options"), [("5x", ()), ("0s", ()), ("2d", ()), ("", ()),
                                                ("5s", ("--force",)), ("5s", ("--dry-run",))])
def test_a_bad_for_is_one_usage_line_and_exit_2(cli, workspace: Workspace, value: str, options: tuple[str, ...]):
    result = cli(workspace, "email-queue", "--for", value, *options)
    assert result.exit_code == 2
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "--for" in result.stderr
    if not options:
        assert cli(workspace, "run-due", "--for", value).exit_code == 2


@pytest.mark.backend_neutral
def test_a_job_with_a_configuration_error_ends_the_loop_with_78(cli, workspace: Workspace):
    workspace.write_config('[jobs.email-queue]\ninterval = "1s"\ntable = "nope"\n')
    started = time.monotonic()
    result = cli(workspace, "email-queue", "--for", "10s")
    assert result.exit_code == 78, result.stderr
    assert time.monotonic() - started < 5, "it kept trying"
    assert "nope" in result.stderr


def test_the_quick_path_hands_a_for_line_to_the_full_cli():
    from cli.front import _parse, quick

    assert _parse(["email-queue", "--for", "55s"]) is None
    assert _parse(["--quiet", "run-due", "--for=55s", "--json"]) is None
    assert quick(["email-queue", "--for", "55s"]) is None


class _Config:
    """What keep_ticking asks of the configuration: each job's schedule period."""

    class _Job:
        class schedule:  # noqa: N801 - stands in for a Schedule
            @staticmethod
            def period() -> timedelta:
                return timedelta(seconds=0.3)

    def job(self, name: str):
        return self._Job()


def test_the_loop_sleeps_until_the_earliest_next_due_and_never_past_the_end():
    from jobs.ticking import keep_ticking

    starts: list[float] = []
    origin = time.monotonic()

    def tick(names: list[str]) -> list[RunReport]:
        starts.append(time.monotonic() - origin)
        now = datetime.now(timezone.utc)
        return [RunReport("slow", RunStatus.NOT_DUE, next_due_at=now + timedelta(seconds=10)),
                RunReport("fast", RunStatus.SUCCEEDED, next_due_at=now + timedelta(seconds=0.4))]

    ending = keep_ticking(_Config(), ["slow", "fast"], timedelta(seconds=1), tick, lambda reports: None)
    assert ending.rounds == 3 and ending.signal is None
    assert [round(s, 1) for s in starts] == [0.0, 0.4, 0.8]
    assert time.monotonic() - origin < 1.05, "it slept past the end"


def test_a_locked_job_is_looked_at_again_after_its_period_and_a_disabled_one_is_dropped():
    from jobs.ticking import keep_ticking

    seen: list[list[str]] = []

    def tick(names: list[str]) -> list[RunReport]:
        seen.append(list(names))
        return [RunReport(name, RunStatus.LOCKED if name == "busy" else RunStatus.DISABLED) for name in names]

    ending = keep_ticking(_Config(), ["busy", "off"], timedelta(seconds=1), tick, lambda reports: None)
    assert seen == [["busy", "off"], ["busy"], ["busy"], ["busy"]], "every 0.3 s (the period, under RECHECK)"
    assert ending.rounds == 4
