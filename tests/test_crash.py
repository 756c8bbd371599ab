"""SIGKILL a lock holder mid-run: the job can be taken again within its backend's stated bound,
and the dead run is later marked abandoned, never left looking running or successful."""

from __future__ import annotations

import json
import signal
import time

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import Workspace
from tests.locks_helpers import PAIRS, can_take_now, config_text, pair_id, url_for

pytestmark = pytest.mark.slow
LEASE_TTL = 3.0


def _wait_for(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def _running(engine) -> bool:
    with engine.connect() as conn:
        try:
            return conn.execute(text("SELECT count(*) FROM side_effects WHERE event = 'batch'")).scalar() > 0
        except Exception:  # noqa: BLE001 - the side table is created by the first batch
            return False


@pytest.mark.parametrize("pair", PAIRS, ids=pair_id)
def test_sigkilled_holder_frees_the_job_within_the_backend_bound(request, tmp_path, pair):
    database, backend = pair
    url = url_for(request, database)
    ws = Workspace(tmp_path, url, plugins=True).upgrade()
    ws.write_config(config_text(backend, f"{LEASE_TTL:g}s"))
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    holder = ws.popen("test-sleeper", "--batches", "200", "--batch-seconds", "0.1", "--force")
    try:
        assert _wait_for(lambda: _running(engine), 30), holder.communicate(timeout=5)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        killed_at = time.monotonic()
        bound = LEASE_TTL + 2.0 if backend == "lease" else 2.0
        taken = None
        while time.monotonic() - killed_at < bound + 3:  # probed in this process: no CLI start-up in the figure
            if can_take_now(ws, "test-sleeper"):
                taken = time.monotonic() - killed_at
                break
            time.sleep(0.05)
        assert taken is not None and taken <= bound + 1.0, f"lock still held {taken}s after SIGKILL"
        probe = ws.run("test-sleeper", "--batches", "0", "--force", "--json")
        assert probe.returncode == 0 and json.loads(probe.stdout)["status"] == "succeeded", probe.stderr
        history = json.loads(ws.run("history", "test-sleeper", "--json").stdout)["runs"]
        assert [r["status"] for r in history] == ["succeeded", "abandoned"]
    finally:
        if holder.poll() is None:
            holder.kill()
        engine.dispose()
