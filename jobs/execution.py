"""What every pipeline shares: who this process is, retried bookkeeping calls, and how a run ends.

The runner (recurring jobs) and the queue worker (one-off tasks) both run a job's function
through `run_in`, which turns whatever it raised into one `Ending` by one ladder, so a lost
lock, a timeout or a signal is recorded the same way whichever pipeline ran the job.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from .errors import DatabaseUnavailable, Interrupted, LeaseLost, PermanentError, TimedOut, is_transient, one_line
from .outcome import RunStatus
from .records import FrozenRecord

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see jobs/__init__.py)
if TYPE_CHECKING:
    import logging
    from datetime import timedelta
    from typing import Any, TypeVar

    from .app import App
    from .config import RetryPolicy
    from .context import JobContext

    T = TypeVar("T")


def owner() -> tuple[str, int]:
    """(host, pid): who runs, as stored in run history, claims and locks."""
    import socket  # here: a locked tick imports this module and never asks who it is

    return socket.gethostname(), os.getpid()


def owner_id() -> str:
    """host:pid, the one spelling of `owner()` in locks, claims and pause marks."""
    host, pid = owner()
    return f"{host}:{pid}"


def retried(fn: Callable[[], T], what: str, policy: RetryPolicy, *, database_url: str | None = None) -> T:
    """A bookkeeping call to the database (outside a job's batches): transient errors retried, then
    DatabaseUnavailable; with database_url, a setup mistake (missing database, unusable SQLite file)
    becomes its one-line ConfigError."""
    from . import retry

    try:
        return retry.call(fn, policy, what=what)
    except Exception as exc:
        if is_transient(exc):
            raise DatabaseUnavailable(f"database unreachable while {what}: {one_line(exc)}") from None
        if database_url is None:
            raise
        from .preflight import explain

        problem = explain(exc, database_url)
        if problem is not None:
            raise problem from None
        raise


def db_call(app: App, fn: Callable[[], T], what: str, policy: RetryPolicy | None = None) -> T:
    """`retried` with the application's retry policy and database URL."""
    return retried(fn, what, policy or app.config.retry, database_url=app.config.database_url)


@dataclass(init=False, repr=False, eq=False)
class Ending(FrozenRecord):
    """How one run of a job's function ended, decided by `classify`.

    temporary: a transient failure (exit 75); permanent: retrying cannot help (a queued task fails
    for good); lost: the run lost its lock or claim, so its outcome is recorded with a short budget.
    """

    status: RunStatus
    error: str | None = None
    temporary: bool = False
    permanent: bool = False
    lost: bool = False
    signal: int | None = None

    def __init__(self, status: RunStatus, error: str | None = None, temporary: bool = False,
                 permanent: bool = False, lost: bool = False, signal: int | None = None) -> None:
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "error", error)
        object.__setattr__(self, "temporary", temporary)
        object.__setattr__(self, "permanent", permanent)
        object.__setattr__(self, "lost", lost)
        object.__setattr__(self, "signal", signal)


SUCCEEDED = Ending(RunStatus.SUCCEEDED)


def classify(exc: BaseException, timeout: timedelta | None) -> Ending:
    """The one ladder from what a job raised to its recorded outcome.

    A lost lock or claim is `failed` (the README's lock section): the live process saw the loss and
    says so; `abandoned` is for a process that died, written by whoever takes its work back.
    """
    if isinstance(exc, Interrupted):
        return Ending(RunStatus.INTERRUPTED, one_line(exc), signal=exc.signum)
    if isinstance(exc, TimedOut):
        return Ending(RunStatus.TIMED_OUT, f"stopped at a batch boundary after its timeout ({timeout})")
    if isinstance(exc, LeaseLost):
        return Ending(RunStatus.FAILED, one_line(exc), lost=True)
    return Ending(RunStatus.FAILED, one_line(exc), temporary=is_transient(exc),
                  permanent=isinstance(exc, PermanentError))


def run_in(ctx: JobContext, fn: Callable[..., Any], arg: Any, *, timeout: timedelta | None) -> Ending:
    """Run fn(ctx, arg) and classify how it ended; never raises for the job's own failure.

    The context is closed either way. Signals come back as an INTERRUPTED ending: the caller decides
    whether that ends the run (the runner) or gives the task back (the worker).
    """
    try:
        fn(ctx, arg)
    except (Interrupted, Exception) as exc:
        ending = classify(exc, timeout)
        if ending.status is RunStatus.FAILED and not ending.lost:
            ctx.log.debug("traceback of the failure", exc_info=True)
        return ending
    finally:
        ctx.close()
    return SUCCEEDED


def known_lost(held: Any) -> bool:
    """Whether the lock is known lost without asking the database (a lease past its trust window, a lock
    session whose connection is gone): the run may have ended on another error that the loss caused."""
    if held is None:
        return False
    try:
        held.check()
    except LeaseLost:
        return True
    return False


def lost_lock_policy(app: App) -> RetryPolicy:
    """Retries for recording the outcome of a run that lost its lock, most often with its host's network:
    within host_loss_bound / 6 (10 s by default), time for a database that restarted to come back, short
    enough that a host cut off from it still exits within host_loss_bound. The next holder records the
    run abandoned otherwise."""
    from dataclasses import replace

    policy = app.config.retry
    return replace(policy, max_time=min(policy.max_time, app.config.locks.host_loss_bound / 6))


def job_logger(job: str, run_id: int | None) -> logging.LoggerAdapter:
    """Every line carries the job name and the run id. (logging is imported here: a locked tick imports
    this module through jobs.locks and writes its one line without logging.)"""
    import logging

    return logging.LoggerAdapter(logging.getLogger("cronwarden.job"), {"job": job, "run_id": run_id})
