"""The run history is pruned past its retention in transactions of at most HISTORY_PRUNE_BATCH rows."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import time_machine
from sqlalchemy import func, select

from jobs.models import runs
from jobs.tracking import HISTORY_PRUNE_BATCH
from tests.layouts import RowsPerTransaction, fill

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


def test_history_past_its_retention_is_pruned_in_bounded_transactions(workspace, engine, cli):
    old = NOW - timedelta(days=200)
    common = dict(job_name="refresh-token-cleanup", trigger="scheduled", host="h", pid=1, items=0)
    with engine.begin() as conn:
        fill(conn, runs, 2 * HISTORY_PRUNE_BATCH + 500, status="succeeded", started_at=old, **common)
        fill(conn, runs, 1, status="running", started_at=old, **common)
        fill(conn, runs, 20, status="succeeded", started_at=NOW - timedelta(days=1), **common)
        fill(conn, runs, 30, status="succeeded", started_at=old, **{**common, "job_name": "log-cleanup"})
    with RowsPerTransaction("job_runs") as watch, time_machine.travel(NOW, tick=False):
        result = cli(workspace, "refresh-token-cleanup", "--force")
    assert result.exit_code == 0, result.stderr
    assert watch.largest <= HISTORY_PRUNE_BATCH
    with engine.connect() as conn:
        left = dict(conn.execute(select(runs.c.job_name, func.count()).group_by(runs.c.job_name)).all())
    # the old run still marked running is reaped as abandoned before this run starts, then pruned with the
    # rest; this run's own row and the recent ones stay, another job's history is not touched
    assert left == {"refresh-token-cleanup": 20 + 1, "log-cleanup": 30}
