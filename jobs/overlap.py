"""The overlap policy's one write (`overlap = "buffer_one"`, see jobs/runner.py): a due tick that finds the job
running records that one run is owed after it. The owed run's start clears it (jobs.tracking.start_run)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from .models import executions
from .tracking import _upsert

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


def owe_run(engine: Engine, job: str, now: datetime) -> bool:
    """A tick found the job running (overlap = "buffer_one"): record that one run is owed after it.

    Returns whether this tick recorded it; a run already owed is left as it is (at most one, however many
    ticks arrive), in one statement, so concurrent ticks cannot owe two.
    """
    with engine.begin() as conn:
        if conn.execute(update(executions).where(executions.c.job_name == job, executions.c.owed_run_at.is_(None))
                        .values(owed_run_at=now)).rowcount:
            return True
        if conn.execute(select(executions.c.job_name).where(executions.c.job_name == job)).first() is not None:
            return False
        _upsert(conn, job, now, owed_run_at=now)
    return True
