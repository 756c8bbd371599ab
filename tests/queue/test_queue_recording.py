"""How a worker records outcomes: on a thread of its own on a database server, with the next claim on SQLite."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from jobs.context import JobContext
from jobs.models import runs
from jobs.queue import TaskSpec, enqueue
from jobs.queue import models as qm
from jobs.queue.worker import Worker, work
from tests.queue.tasks import NOOP

q = qm.queued_jobs


@pytest.fixture
def queue_engine(engine):
    qm.create(engine)
    return engine


def add_noops(engine, n: int) -> None:
    with engine.begin() as conn:
        for _ in range(n):
            enqueue(conn, NOOP)


def statuses(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(select(q.c.status, func.count()).group_by(q.c.status)).all())


def test_outcomes_are_recorded_in_the_background_on_a_server_and_with_the_next_claim_on_sqlite(queue_engine):
    background = Worker(queue_engine, tasks={}).recorder().background
    assert background is (queue_engine.dialect.name != "sqlite")
    add_noops(queue_engine, 450)
    threads = threading.active_count()

    report = work(queue_engine, tasks={NOOP.name: NOOP}, batch_size=50)

    assert (report.claimed, report.succeeded, report.lost) == (450, 450, 0)
    assert statuses(queue_engine) == {"succeeded": 450}
    with queue_engine.connect() as conn:
        history = conn.execute(select(runs.c.status, func.count()).where(runs.c.job_name == NOOP.name)
                               .group_by(runs.c.status)).all()
    assert history == [("succeeded", 450)]
    assert threading.active_count() == threads  # the recording thread is gone when work() returns


@dataclass(frozen=True)
class NoArgs:
    pass


def hide_history(ctx: JobContext, a: NoArgs) -> None:
    """Commits a rename of the history table: recording this job's outcome must then fail."""
    ctx.in_transaction(lambda conn: conn.execute(text("ALTER TABLE job_runs RENAME TO job_runs_hidden")))


HIDE = TaskSpec(name="test-hide-history", run=hide_history, args=NoArgs)


def test_an_error_while_recording_outcomes_reaches_the_caller_of_work(queue_engine):
    with queue_engine.begin() as conn:
        enqueue(conn, HIDE)
    try:
        with pytest.raises(DBAPIError, match="job_runs"):
            work(queue_engine, tasks={HIDE.name: HIDE})
    finally:
        with queue_engine.begin() as conn:
            conn.execute(text("ALTER TABLE job_runs_hidden RENAME TO job_runs"))
    assert statuses(queue_engine) == {"running": 1}  # not recorded: taken back once its claim expires


def fail_with_controls(ctx: JobContext, a: NoArgs) -> None:
    raise RuntimeError("bad byte \x00 and bell \x07 from the task")


CONTROLS = TaskSpec(name="test-fail-with-controls", run=fail_with_controls, args=NoArgs, retry_delays=())


def test_an_error_message_with_nul_and_control_characters_is_recorded_escaped(queue_engine):
    with queue_engine.begin() as conn:
        job_id = enqueue(conn, CONTROLS)

    report = work(queue_engine, tasks={CONTROLS.name: CONTROLS})

    assert report.failed == 1
    with queue_engine.connect() as conn:
        error = conn.execute(select(q.c.last_error).where(q.c.id == job_id)).scalar()
        history = conn.execute(select(runs.c.error).where(runs.c.job_name == CONTROLS.name)).scalar()
    assert error == history == "RuntimeError: bad byte \\x00 and bell \\x07 from the task"
