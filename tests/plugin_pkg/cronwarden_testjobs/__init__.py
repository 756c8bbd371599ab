"""A user's own jobs, in their own package, registered through the `cronwarden.jobs` entry point.

They exist for the tests of the machinery (locking, crashes, signals, failures): each
records what it does in a side table so a test can see every entry and exit.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from sqlalchemy import Column, Integer, MetaData, String, Table, insert, update

from cronwarden import JobContext, JobSpec, PermanentError, TransientError, setting

side_md = MetaData()
side_effects = Table(
    "side_effects", side_md,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job", String(64), nullable=False),
    Column("event", String(16), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("batch", Integer, nullable=False, default=0),
)
side_shared = Table("side_shared", side_md, Column("id", Integer, primary_key=True), Column("n", Integer))


@dataclass(frozen=True)
class SleeperSettings:
    batches: int = setting(3, min=0, cli=True, help="How many batches.")
    batch_seconds: float = setting(0.2, min=0, cli=True, help="Seconds each batch holds its transaction.")
    shared_row: bool = setting(False, help="Each batch updates one row every run shares, and holds its row lock.")
    pause_seconds: float = setting(0.0, min=0, cli=True, help="Seconds between batches, outside any transaction.")
    release_file: str = setting("", cli=True, help="Once this file exists, batches and pauses end at once: a test "
                                                  "holds the run exactly as long as it needs.")


def _record(conn, job: str, event: str, batch: int = 0) -> None:
    side_md.create_all(conn, checkfirst=True)
    conn.execute(insert(side_effects).values(job=job, event=event, pid=os.getpid(), batch=batch))


def sleeper(ctx: JobContext, s: SleeperSettings) -> None:
    """Enters, sleeps inside each batch's transaction, exits: all recorded in side_effects."""
    ctx.in_transaction(_record, ctx.job, "enter")
    for n in range(1, s.batches + 1):
        ctx.in_transaction(_sleep_batch, ctx.job, n, s.batch_seconds, s.shared_row, s.release_file,
                           tally=lambda _: {"batches": 1})
        _wait(s.pause_seconds, s.release_file)
    ctx.in_transaction(_record, ctx.job, "exit")


def _sleep_batch(conn, job: str, n: int, seconds: float, shared_row: bool = False, release_file: str = "") -> None:
    _record(conn, job, "batch", n)
    if shared_row and conn.execute(update(side_shared).where(side_shared.c.id == 1)
                                   .values(n=side_shared.c.n + 1)).rowcount == 0:
        conn.execute(insert(side_shared).values(id=1, n=1))
    _wait(seconds, release_file)


def _wait(seconds: float, release_file: str) -> None:
    """Sleep `seconds`, or less once `release_file` exists."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if release_file and os.path.exists(release_file):
            return
        time.sleep(min(0.02, max(0.0, end - time.monotonic())))


@dataclass(frozen=True)
class FailSettings:
    message: str = setting("boom", help="The error text.")
    transient: bool = setting(False, help="Raise a transient error instead of a permanent one.")


def fail(ctx: JobContext, s: FailSettings) -> None:
    ctx.in_transaction(_record, ctx.job, "enter")
    if s.transient:
        raise TransientError(s.message)
    raise PermanentError(s.message)


@dataclass(frozen=True)
class FlakySettings:
    fail_times: int = setting(2, min=0, cli=True, help="Attempts of the batch that fail before one succeeds.")
    transient: bool = setting(True, help="Fail with a transient (retried) or a permanent error.")


_attempts = {"n": 0}


def flaky(ctx: JobContext, s: FlakySettings) -> None:
    """One batch that fails its first `fail_times` attempts; counts every attempt."""
    _attempts["n"] = 0

    def batch(conn) -> None:
        _attempts["n"] += 1
        ctx.count("attempts", 1)
        _record(conn, ctx.job, "batch", _attempts["n"])
        if _attempts["n"] <= s.fail_times:
            raise (TransientError if s.transient else PermanentError)(f"attempt {_attempts['n']} failed")

    ctx.in_transaction(batch)


JOBS = [
    JobSpec(name="test-sleeper", run=sleeper, settings=SleeperSettings, schedule="1h",
            description="Test job: sleeps in batches and records entries."),
    JobSpec(name="test-fail", run=fail, settings=FailSettings, schedule="24h",
            description="Test job: always fails."),
    JobSpec(name="test-flaky", run=flaky, settings=FlakySettings, schedule="24h",
            description="Test job: a batch that fails a few attempts."),
    JobSpec(name="test-needs", run=lambda ctx, s: None, schedule="once",
            description="Test job: declares that it needs a sessions table (once: run-due leaves it out).",
            needs=lambda s: {"sessions": ("id", "seen_at")}),
]
