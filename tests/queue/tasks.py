"""Queue tasks for the tests, importable by real `work` processes through CRONWARDEN_TASK_MODULES."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Column, Index, Integer, MetaData, String, Table, func, insert, select

from jobs.context import JobContext
from jobs.errors import PermanentError
from jobs.queue import TaskSpec
from jobs.settings import setting

side = MetaData()
executions = Table(
    "queue_test_executions",
    side,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tag", String(64), nullable=False),
    Index("ix_queue_test_executions_tag", "tag"),
)


def create_side_table(engine) -> None:
    side.create_all(engine, checkfirst=True)


def executions_of(engine, tag: str) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(executions).where(executions.c.tag == tag)).scalar()


def _record(conn, tag: str) -> int:
    conn.execute(insert(executions).values(tag=tag))
    return conn.execute(select(func.count()).select_from(executions).where(executions.c.tag == tag)).scalar()


@dataclass(frozen=True)
class RecordArgs:
    tag: str = setting(help="What the execution is recorded under.")
    fail_times: int = setting(0, min=0, help="Fail while this task has run at most this many times.")
    permanent: bool = setting(False, help="Fail with a PermanentError.")


def record(ctx: JobContext, a: RecordArgs) -> None:
    """Commits one execution row, then fails on its first `fail_times` executions."""
    runs = ctx.in_transaction(_record, a.tag)
    ctx.count("recorded")
    if a.permanent:
        raise PermanentError(f"{a.tag}: refused for good")
    if runs <= a.fail_times:
        raise RuntimeError(f"{a.tag}: planned failure {runs}")


@dataclass(frozen=True)
class HangArgs:
    tag: str = setting()
    marker: Path = setting(help="Created when the first execution is under way.")


def hang_first_time(ctx: JobContext, a: HangArgs) -> None:
    """The first execution commits its record, says so, then waits to be killed; later ones finish."""
    runs = ctx.in_transaction(_record, a.tag)
    if runs == 1:
        a.marker.write_text("running", encoding="utf-8")
        for _ in range(600):
            time.sleep(0.1)
            ctx.checkpoint()


@dataclass(frozen=True)
class NoArgs:
    pass


def noop(ctx: JobContext, a: NoArgs) -> None:
    """Does nothing: what the benchmark drains."""


RECORD = TaskSpec(name="test-record", run=record, args=RecordArgs)
HANG = TaskSpec(name="test-hang", run=hang_first_time, args=HangArgs, timeout=timedelta(seconds=120),
                claim_margin=timedelta(seconds=1))
NOOP = TaskSpec(name="test-noop", run=noop, args=NoArgs)
TASKS = (RECORD, HANG, NOOP)
MODULE = __name__  # for CRONWARDEN_TASK_MODULES
