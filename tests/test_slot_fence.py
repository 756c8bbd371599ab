"""Exactly once per slot, enforced by the database: a second holder of a scheduled job's slot, whatever its
lock believed, is recorded `duplicate_slot`, exits 0 and does no work; a failed slot is retried; `--force`
is never refused."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest
import time_machine
from sqlalchemy import create_engine, select, text

from tests.conftest import Workspace

# One slot all year, so two racers serve the same one; retries 1 s after a start, so the second holder, which
# reaps the first one's run as abandoned, is due again at once (as it is for any run longer than its retry delay),
# and so is the retry after the first one's own failure (the reap counted one failure already).
YEARLY = '[jobs.test-sleeper]\ncron = "0 0 1 1 *"\nretry_delays = ["1s", "1s"]\n'
NOON = datetime(2026, 3, 10, 12, 0, 30, tzinfo=timezone.utc)
DAILY = '[jobs.test-flaky]\ncron = "0 0 * * *"\nretry_delays = ["1s"]\ntransient = false\n'


def _sync(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://")


def _side_effects(engine) -> list[tuple[str, int]]:
    with engine.connect() as conn:
        try:
            return [tuple(r) for r in conn.execute(text("SELECT event, pid FROM side_effects ORDER BY id"))]
        except Exception:  # noqa: BLE001 - the side table is created by a run's first batch
            return []


def _wait_for_batch(engine, proc, timeout: float = 60) -> None:
    """Until the run has committed a batch and has run for longer than its retry delay."""
    deadline = time.monotonic() + timeout
    while not any(event == "batch" for event, _ in _side_effects(engine)):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate(timeout=10)
        time.sleep(0.05)
    time.sleep(1.2)


def _history(ws: Workspace) -> list[dict]:
    result = ws.run("history", "test-sleeper", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["runs"]


@pytest.mark.slow
def test_two_hosts_whose_file_locks_do_not_see_each_other_run_the_slot_once(tmp_path, db_url):
    """Two lock folders are two hosts without a shared lock: both win their lock, the database refuses one."""
    ws = Workspace(tmp_path, db_url, plugins=True).upgrade()
    ws.write_config('[locks]\nbackend = "file"\n' + YEARLY)
    engine = create_engine(_sync(db_url))
    # SQLite's writers take turns, and its busy handler is not fair: the first run pauses between its batches,
    # or the second would wait for its write lock until the first is done
    release = tmp_path / "release"  # the first run lasts until the test has seen the second one refused
    first = ws.popen("test-sleeper", "--batches", "100", "--batch-seconds", "0.05", "--pause-seconds", "0.25",
                     "--release-file", str(release), "--json", env=ws.env(CRONWARDEN_LOCK_DIR=str(tmp_path / "host-a")))
    try:
        _wait_for_batch(engine, first)
        second = ws.run("test-sleeper", "--batches", "200", "--batch-seconds", "0.1", "--json",
                        env=ws.env(CRONWARDEN_LOCK_DIR=str(tmp_path / "host-b")))
        refused = json.loads(second.stdout)
        assert first.poll() is None, "the first run ended before the second started: nothing was tested"
        assert second.returncode == 0 and refused["status"] == "duplicate_slot", second.stderr
        assert "already claimed by run" in refused["error"] and refused["counts"] == {}
        release.touch()
        out, err = first.communicate(timeout=60)
        assert first.returncode == 0 and json.loads(out)["status"] == "succeeded", err
        assert {pid for _, pid in _side_effects(engine)} == {first.pid}, "the refused run touched the data"
        history = _history(ws)
        assert [r["status"] for r in history] == ["duplicate_slot", "succeeded"]
        assert json.loads(ws.run("test-sleeper", "--json").stdout)["status"] == "not_due"
    finally:
        if first.poll() is None:
            first.kill()
        engine.dispose()


def _live_claim(engine, job: str, slot: datetime, now: datetime) -> int:
    """A scheduled run of `job` that holds `slot` and is still running (another host's, as the database sees it)."""
    from jobs import tracking
    from jobs.outcome import Trigger

    class _Job:
        name = job
        catch_up = "one"

    return tracking.start_run(engine, _Job, Trigger.SCHEDULED, now, "elsewhere", 4242, slot=slot)


def test_a_scheduled_run_of_a_held_slot_is_refused_and_a_forced_run_is_not(plugin_workspace, engine, cli):
    plugin_workspace.write_config(DAILY)
    with time_machine.travel(NOON, tick=False):
        midnight = NOON.replace(hour=0, minute=0, second=0)
        holder = _live_claim(engine, "test-flaky", midnight, NOON - timedelta(minutes=1))
        refused = cli(plugin_workspace, "test-flaky", "--fail-times", "0", "--json")
        assert refused.exit_code == 0, refused.stderr
        report = json.loads(refused.stdout)
        assert report["status"] == "duplicate_slot" and report["counts"] == {}
        assert f"already claimed by run {holder} on elsewhere:4242" in report["error"]
        forced = cli(plugin_workspace, "test-flaky", "--fail-times", "0", "--force", "--json")
        assert forced.exit_code == 0 and json.loads(forced.stdout)["status"] == "succeeded", forced.stderr
    runs = json.loads(cli(plugin_workspace, "history", "test-flaky", "--json").stdout)["runs"]
    # the holder's run is reaped `abandoned` by the refused run (it held the lock too), its claim kept
    assert sorted(r["status"] for r in runs) == ["abandoned", "duplicate_slot", "succeeded"]
    status = json.loads(cli(plugin_workspace, "status", "--json").stdout)
    assert "duplicate_slot" not in json.dumps(status), "a refused run leaves the tracking row to the holder"


def test_a_failed_run_releases_its_slot_and_the_retry_of_that_slot_succeeds(plugin_workspace, engine, cli):
    from jobs.models import slots

    plugin_workspace.write_config(DAILY)
    with time_machine.travel(NOON, tick=False):
        failed = cli(plugin_workspace, "test-flaky", "--fail-times", "1", "--json")
        assert failed.exit_code == 1 and json.loads(failed.stdout)["status"] == "failed"
        with engine.connect() as conn:
            assert conn.execute(select(slots)).all() == [], "a failed run keeps no claim"
    with time_machine.travel(NOON + timedelta(seconds=5), tick=False):
        retried = cli(plugin_workspace, "test-flaky", "--fail-times", "0", "--json")
        assert retried.exit_code == 0 and json.loads(retried.stdout)["status"] == "succeeded", retried.stderr
        with engine.connect() as conn:
            claimed = conn.execute(select(slots.c.job_name, slots.c.slot_at)).all()
        assert claimed == [("test-flaky", datetime(2026, 3, 10, tzinfo=timezone.utc))], "the retry served the slot"


def test_an_abandoned_runs_slot_is_released_only_after_the_host_loss_bound(engine):
    from jobs import tracking
    from jobs.config import load
    from jobs.models import slots
    from jobs.outcome import Trigger
    from jobs.registry import builtin_specs
    from jobs.slots import SlotTaken

    job = load({"jobs": {"refresh-token-cleanup": {"cron": "0 0 * * *"}}}, builtin_specs(),
               database_url="sqlite://").job("refresh-token-cleanup")
    slot, bound = datetime(2026, 3, 10, tzinfo=timezone.utc), timedelta(seconds=60)
    dead = tracking.start_run(engine, job, Trigger.SCHEDULED, NOON, "gone", 1, slot=slot, abandoned_after=bound)
    reaped_at = NOON + timedelta(minutes=5)
    assert tracking.reap_abandoned(engine, job, reaped_at) == 1
    with pytest.raises(SlotTaken, match=f"already claimed by run {dead} on gone:1, abandoned"):
        tracking.start_run(engine, job, Trigger.SCHEDULED, reaped_at + bound / 2, "h", 2, slot=slot,
                           abandoned_after=bound)
    late = tracking.start_run(engine, job, Trigger.SCHEDULED, reaped_at + bound, "h", 3, slot=slot,
                              abandoned_after=bound)
    with engine.connect() as conn:
        assert conn.execute(select(slots.c.run_id)).scalars().all() == [late], "the retry took the claim over"


@pytest.mark.slow
@pytest.mark.parametrize("server", ["pg_url", "mysql_url"])
def test_a_lease_broken_by_unlock_lets_in_a_second_holder_the_database_refuses(request, tmp_path, server):
    """`unlock` mid-batch: the second holder is refused at its start; the first rolls its batch back at commit
    (the lease check), fails and releases the slot, whose retry then does the work once.

    (On SQLite the first run's batch holds the only write lock, so no second holder can start mid-batch.)
    """
    url = request.getfixturevalue(server)
    ws = Workspace(tmp_path, url, plugins=True).upgrade()
    ws.write_config('[locks]\nbackend = "lease"\nlease_ttl = "120s"\n' + YEARLY)
    engine = create_engine(_sync(url))
    release = tmp_path / "release"  # the first run's batch lasts until the second holder has been refused
    first = ws.popen("test-sleeper", "--batches", "1", "--batch-seconds", "60", "--release-file", str(release), "--json")
    try:
        deadline = time.monotonic() + 60
        while ("enter", first.pid) not in _side_effects(engine):
            assert time.monotonic() < deadline and first.poll() is None, first.communicate(timeout=10)
            time.sleep(0.05)
        time.sleep(1.2)  # inside its batch, and past its 1 s retry delay
        broken = ws.run("unlock", "test-sleeper")
        assert broken.returncode == 0 and "lease broken" in broken.stdout, broken.stderr
        second = ws.run("test-sleeper", "--batches", "1", "--batch-seconds", "0", "--json")
        assert first.poll() is None, "the first run ended before the second started: nothing was tested"
        assert second.returncode == 0 and json.loads(second.stdout)["status"] == "duplicate_slot", second.stderr
        release.touch()
        out, err = first.communicate(timeout=60)
        assert first.returncode == 1 and "lost the lease" in json.loads(out)["error"], err
        assert _side_effects(engine) == [("enter", first.pid)], "only the first run's entry: its batch rolled back"
        time.sleep(1.1)  # the failed run's retry delay
        retry = ws.run("test-sleeper", "--batches", "1", "--batch-seconds", "0", "--json")
        assert retry.returncode == 0 and json.loads(retry.stdout)["status"] == "succeeded", retry.stderr
        assert [r["status"] for r in _history(ws)] == ["succeeded", "duplicate_slot", "failed"]
    finally:
        if first.poll() is None:
            first.kill()
        engine.dispose()
