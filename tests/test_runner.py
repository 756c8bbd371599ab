"""The pipeline in process: in-process retries, timeouts, lost locks, dry runs."""

from __future__ import annotations

import json
import threading
import time

import pytest
from sqlalchemy import create_engine, text


def _report(result) -> dict:
    return json.loads(result.stdout)


def test_transient_batch_errors_are_retried_in_process(plugin_workspace, cli):
    plugin_workspace.write_config('[retry]\ninitial_wait = "0s"\nmax_wait = "0.1s"\n')
    result = cli(plugin_workspace, "test-flaky", "--fail-times", "2", "--json")
    assert result.exit_code == 0, result.stderr
    report = _report(result)
    assert report["status"] == "succeeded" and report["counts"] == {"attempts": 3}


def test_transient_errors_stop_after_the_retry_budget_and_exit_75(plugin_workspace, cli):
    plugin_workspace.write_config('[retry]\nattempts = 3\ninitial_wait = "0s"\nmax_wait = "0.1s"\n')
    result = cli(plugin_workspace, "test-flaky", "--fail-times", "10", "--json")
    assert result.exit_code == 75
    assert _report(result)["counts"] == {"attempts": 3}


def test_permanent_errors_are_not_retried(plugin_workspace, cli):
    plugin_workspace.write_config('[jobs.test-flaky]\ntransient = false\n')
    result = cli(plugin_workspace, "test-flaky", "--fail-times", "1", "--json")
    assert result.exit_code == 1
    assert _report(result)["counts"] == {"attempts": 1}


def test_timeout_stops_at_a_batch_boundary_and_records_timed_out(plugin_workspace, cli):
    plugin_workspace.write_config('[jobs.test-sleeper]\ntimeout = "0.5s"\n')
    result = cli(plugin_workspace, "test-sleeper", "--batches", "50", "--batch-seconds", "0.1", "--json")
    assert result.exit_code == 1
    report = _report(result)
    assert report["status"] == "timed_out" and 3 <= report["counts"]["batches"] < 50
    runs = _report(cli(plugin_workspace, "history", "--json"))["runs"]
    assert runs[0]["status"] == "timed_out" and "timeout" in runs[0]["error"]


def test_dry_run_changes_and_records_nothing(plugin_workspace, cli):
    result = cli(plugin_workspace, "test-sleeper", "--batches", "2", "--batch-seconds", "0", "--dry-run", "--json")
    assert result.exit_code == 0 and _report(result)["status"] == "dry_run"
    assert _report(cli(plugin_workspace, "history", "--json"))["runs"] == []


@pytest.mark.parametrize("server", ["pg_url", "mysql_url"])
def test_a_lost_lease_rolls_back_the_batch_and_fails_the_run(request, tmp_path, cli, server):
    """Another process broke our lease mid-run: the batch in flight must not commit.

    (On SQLite, writers are serialised, so no one can break a lease between two batches.)
    """
    from jobs.db import make_engine
    from jobs.locks.lease import LeaseLockBackend
    from jobs.schema import upgrade
    from tests.conftest import Workspace

    plugin_workspace = Workspace(tmp_path, request.getfixturevalue(server), plugins=True)

    plugin_workspace.write_config('[locks]\nbackend = "lease"\nlease_ttl = "10s"\n')
    engine = make_engine(plugin_workspace.db_url)
    upgrade(engine)
    breaker = LeaseLockBackend(engine)

    def break_it() -> None:
        """Break the lease once the run holds it and has committed a batch (whatever the machine's load)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                try:
                    started = conn.execute(text("SELECT count(*) FROM side_effects WHERE event = 'batch'")).scalar()
                except Exception:  # noqa: BLE001 - the side table appears with the run's first batch
                    started = 0
            if started and breaker.break_lease("test-sleeper"):
                return
            time.sleep(0.05)

    thread = threading.Thread(target=break_it)
    thread.start()
    result = cli(plugin_workspace, "test-sleeper", "--batches", "10", "--batch-seconds", "0.3", "--json")
    thread.join()
    report = _report(result)
    assert result.exit_code == 1 and report["status"] == "failed" and "lost the lease" in report["error"]
    with engine.connect() as conn:
        committed = conn.execute(text("SELECT count(*) FROM side_effects WHERE event = 'batch'")).scalar()
    assert committed == report["counts"].get("batches", 0)
    engine.dispose()


@pytest.mark.slow
def test_a_terminated_database_connection_mid_batch_is_retried(tmp_path, pg_url):
    """A real fault: the server ends the batch's session (pg_terminate_backend); the batch is redone."""
    from tests.conftest import Workspace

    ws = Workspace(tmp_path, pg_url, plugins=True).upgrade()
    ws.write_config('[retry]\ninitial_wait = "0.1s"\n')
    admin = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    proc = ws.popen("test-sleeper", "--batches", "4", "--batch-seconds", "1", "--json")
    killed = 0
    deadline = time.monotonic() + 30
    while not killed and time.monotonic() < deadline:
        with admin.begin() as conn:
            killed = conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'cronwarden' AND datname = current_database() "
                "AND state = 'idle in transaction' "
                "AND clock_timestamp() - state_change BETWEEN interval '0.1 s' AND interval '0.5 s'")).scalar()
        time.sleep(0.1)
    out, err = proc.communicate(timeout=60)
    assert killed == 1
    assert proc.returncode == 0, err
    assert json.loads(out)["counts"] == {"batches": 4}
    assert "retrying" in err
    with admin.connect() as conn:
        batches = conn.execute(text("SELECT batch FROM side_effects WHERE event = 'batch' ORDER BY id")).scalars()
        assert list(batches) == [1, 2, 3, 4]
    admin.dispose()
