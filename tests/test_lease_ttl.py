"""The lease's TTL bounds a vanished holder, not the run: host_loss_bound / 2 by default, never stretched by a
job's timeout, and renewed for as long as the run lasts."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text

from jobs.config import load
from jobs.locks.lease import server_now
from jobs.registry import builtin_specs
from tests.conftest import Workspace


@pytest.mark.parametrize("toml, ttl", [
    ({}, timedelta(seconds=30)),
    ({"locks": {"host_loss_bound": "20s"}}, timedelta(seconds=10)),
    ({"locks": {"host_loss_bound": "20s", "lease_ttl": "2m"}}, timedelta(minutes=2)),
], ids=["default", "half-the-bound", "set"])
def test_lease_ttl_defaults_to_half_the_host_loss_bound(toml, ttl) -> None:
    assert load(toml, builtin_specs(), environ={}).locks.lease_ttl == ttl


@pytest.mark.slow
@pytest.mark.parametrize("server", ["sqlite_url", "pg_url"])
def test_a_job_with_a_long_timeout_holds_a_short_lease_renewed_past_its_ttl(request, tmp_path, cli, server):
    from jobs.db import make_engine
    from jobs.schema import upgrade

    ws = Workspace(tmp_path, request.getfixturevalue(server), plugins=True)
    ws.write_config('[locks]\nbackend = "lease"\nlease_ttl = "3s"\n[jobs.test-sleeper]\ntimeout = "1h"\n')
    engine = make_engine(ws.db_url)
    upgrade(engine)
    now_sql = server_now(engine.dialect.name)
    ahead: list[float] = []
    done = threading.Event()

    def watch() -> None:
        """How far ahead of the server's clock the lease reaches, while the run holds it."""
        while not done.is_set():
            with engine.connect() as conn:
                row = conn.execute(text(f"SELECT lock_until, {now_sql} AS now FROM job_leases "
                                        "WHERE job_name = 'test-sleeper'")).first()
            if row is not None:
                until, now = (datetime.fromisoformat(v) if isinstance(v, str) else v for v in row)
                ahead.append((until - now).total_seconds())
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    result = cli(ws, "test-sleeper", "--batches", "25", "--batch-seconds", "0.2", "--json")
    done.set()
    watcher.join(timeout=5)
    engine.dispose()
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and report["status"] == "succeeded", result.stderr
    assert report["counts"]["batches"] == 25, "the run outlived its 3 s lease by renewing it"
    assert ahead and max(ahead) <= 3.5, f"the lease reached {max(ahead):.1f} s ahead, not its 3 s TTL"
