"""The pipeline of one invocation, and the only module that knows the order of the steps:

config (already valid) → enabled → due (cheap, no lock) → signals → jitter (scheduled runs) → lock →
reap abandoned runs → due again (authoritative; a `catch_up = "none"` job records the stale slots it skips
and ends `not_due`) → the job's tables (once) → record start and claim the
schedule slot (jobs.slots: a slot another run holds ends here as `duplicate_slot`) → run in bounded
transactions → record outcome → the owed run, if any → report.

Overlap (`overlap = "buffer_one"`, Temporal's name): a due tick that finds the lock busy records that one run
is owed (jobs.overlap.owe_run) and tries the lock once more (the holder may have finished before it could
see the debt). The holder, right after recording its own outcome and still holding the lock, starts that
owed run, whose start clears the debt in its own start transaction; one owed run per invocation, so a
process stays bounded: a debt recorded during the owed run is left to the next tick, which runs it even if
the schedule is not due (as it does when the holder died). An owed run is a `scheduled` run that claims no
schedule slot (the slot fence keeps a slot's second run out, and an owed run is by nature a second run of
the slot its holder served); when the schedule is due as well, the run is an ordinary scheduled one that
claims its slot and pays the debt too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import clock, execution, jitter, overlap, signals, slots, tracking
from .context import JobContext
from .due import locked, locked_line, owed, owed_only, skip, stale
from .errors import ConfigError, DatabaseUnavailable, Interrupted, one_line
from .execution import db_call, job_logger
from .outcome import RunReport, RunStatus, Trigger

if TYPE_CHECKING:
    from .app import App
    from .config import JobConfig
    from .locks import Held


def run_job(app: App, name: str, trigger: Trigger = Trigger.SCHEDULED, *, dry_run: bool = False,
            settings: Any = None) -> RunReport:
    """Run one job once, as the contract's section 4 says; never raises for a job failure.

    Raises Interrupted (signal before any run was recorded), DatabaseUnavailable and ConfigError.
    """
    report = _run_job(app, name, trigger, dry_run=dry_run, settings=settings)
    if report.status.is_skip or report.status is RunStatus.DUPLICATE_SLOT:  # no work: no ping, no span
        _notify(app, job_logger(name, None), "run_skipped", app.config.job(name), report)
    return report


def _run_job(app: App, name: str, trigger: Trigger, *, dry_run: bool, settings: Any) -> RunReport:
    job = app.config.job(name)
    settings = job.settings if settings is None else settings
    if not job.enabled:
        return RunReport(name, RunStatus.DISABLED, trigger)
    if dry_run:
        _validate(job, settings)
        _check_needs(app, job, settings)
        return _dry_run(app, job, trigger, settings)
    row = db_call(app, lambda: tracking.read_state(app.engine, name), "reading the tracking table")
    skipped = _skip(job, row, trigger)
    if skipped is not None:
        return skipped
    _validate(job, settings)
    with ExitStack() as stack:
        stop = stack.enter_context(signals.graceful_stop())
        stop.check()  # a --for loop asked to stop (jobs.ticking): no new run
        if trigger is Trigger.SCHEDULED:
            jitter.wait(job, row, stop)
        held = stack.enter_context(_holding(app, job))
        buffered = held is None and trigger is Trigger.SCHEDULED and job.overlap == "buffer_one"
        if buffered:
            db_call(app, lambda: overlap.owe_run(app.engine, name, clock.utcnow()), "recording the owed run")
            held = stack.enter_context(_holding(app, job))
        if held is None:
            report = locked(job, trigger, buffered)
            job_logger(name, None).info(locked_line(report))
            return report
        now = clock.utcnow()
        db_call(app, lambda: tracking.reap_abandoned(app.engine, job, now), "reaping abandoned runs")
        row = db_call(app, lambda: tracking.read_state(app.engine, name), "reading the tracking table")
        skipped = _skip(job, row, trigger) or _skip_stale(app, job, row, trigger)
        if skipped is not None:
            return skipped
        _check_needs(app, job, settings)
        report = _execute(app, job, trigger, settings, stop, held, row,
                          owed_only=owed_only(job, row, trigger, clock.utcnow()))
        report.owed_run = _owed_run(app, job, stop, held, report)
        return report


def _validate(job: JobConfig, settings: Any) -> None:
    """Checks that matter only when the job really runs (a one-shot job that is done needs no password)."""
    if job.spec.validate is not None:
        job.spec.validate(settings)


def _check_needs(app: App, job: JobConfig, settings: Any) -> None:
    """The tables and columns the job declares exist (one reflection per table per run), else ConfigError."""
    if job.spec.needs is None:
        return
    needs = job.spec.needs(settings)
    if not needs:
        return
    from .preflight import check_needs

    hint = f"point [jobs.{job.name}] at your schema with its `table` and column settings"
    db_call(app, lambda: check_needs(app.engine, job.name, needs, hint), "checking the job's tables")


def _skip(job: JobConfig, row: Any, trigger: Trigger) -> RunReport | None:
    return skip(job, row, trigger, clock.utcnow())


def _skip_stale(app: App, job: JobConfig, row: Any, trigger: Trigger) -> RunReport | None:
    """A `catch_up = "none"` tick whose owed slot is older than the window: record the slots it skips (never
    silently: missed_slots, the metric, `status` and a warning) and wait for the next slot."""
    if trigger is not Trigger.SCHEDULED or owed(row):  # a run a busy tick owed runs whatever the slots' age
        return None
    now = clock.utcnow()
    slot = stale(job, row, now)
    if slot is None:
        return None
    skipped, due = db_call(app, lambda: tracking.record_skip(app.engine, job, slot, now), "recording skipped slots")
    from .schedule import format_duration

    window = job.catch_up_window
    job_logger(job.name, None).warning(
        "skipped %d missed slot(s) up to %s: older than catch_up_window %s (catch_up = \"none\"); next due %s",
        skipped, slot.isoformat(), format_duration(window) if window is not None else "-",
        due.isoformat() if due is not None else "never")
    return RunReport(job.name, RunStatus.NOT_DUE, trigger, next_due_at=due)


def _holding(app: App, job: JobConfig):
    from . import locks

    # The lease is renewed while the run lasts, so its TTL bounds a vanished holder, not the run.
    ttl = max(app.config.locks.lease_ttl, job.spec.lock_ttl or timedelta(0))
    backend = db_call(app, lambda: app.locks, "choosing the lock backend")
    return locks.holding(_RetryingBackend(app, backend), job.name, ttl)


class _RetryingBackend:
    """Taking a lock talks to the database too: retry its transient errors like any other call."""

    def __init__(self, app: App, backend: Any) -> None:
        self._app = app
        self._backend = backend

    def try_acquire(self, job: str, ttl: timedelta) -> Held | None:
        return db_call(self._app, lambda: self._backend.try_acquire(job, ttl), "taking the lock")


def _owed_run(app: App, job: JobConfig, stop: Any, held: Any, report: RunReport) -> RunReport | None:
    """The run a tick owed while this one held the lock, started right after its outcome, still under the lock
    (with the configured settings, as the tick would have run it). A run that was interrupted, refused or lost
    its lock leaves the debt to the next tick."""
    if report.run_id is None or report.status in (RunStatus.INTERRUPTED, RunStatus.DUPLICATE_SLOT) \
            or stop.requested or execution.known_lost(held):
        return None
    row = db_call(app, lambda: tracking.read_state(app.engine, job.name), "reading the tracking table")
    if not owed(row) or row is None or row["paused"]:
        return None
    try:
        _validate(job, job.settings)
    except ConfigError as exc:
        job_logger(job.name, None).warning("the owed run is left to the next tick: configuration: %s", exc)
        return None
    return _execute(app, job, Trigger.SCHEDULED, job.settings, stop, held, row,
                    owed_only=owed_only(job, row, Trigger.SCHEDULED, clock.utcnow()))


def _execute(app: App, job: JobConfig, trigger: Trigger, settings: Any, stop: Any, held: Any,
             row: Any, *, owed_only: bool = False) -> RunReport:
    host, pid = execution.owner()
    started = clock.utcnow()
    try:
        run_id = _claim_start(app, job, trigger, started, host, pid, row, owed_only)
    except slots.SlotTaken as taken:
        job_logger(job.name, taken.run_id).warning("duplicate_slot: %s", taken.message)
        return RunReport(job.name, RunStatus.DUPLICATE_SLOT, trigger, run_id=taken.run_id, started_at=started,
                         finished_at=started, error=taken.message)
    logger = job_logger(job.name, run_id)
    logger.info("started (trigger=%s, host=%s, pid=%d)%s", trigger.value, host, pid,
                " the run a busy tick owed (overlap = buffer_one)" if owed_only else "")
    _notify(app, logger, "run_started", job, run_id, trigger)
    deadline = time.monotonic() + job.timeout.total_seconds() if job.timeout is not None else None
    ctx = JobContext(job=job.name, run_id=run_id, now=started, engine=app.engine, log=logger,
                     retry=app.config.retry, stop=stop, held=held, deadline=deadline,
                     progress=app.progress(job.name), observers=app.observers)
    ending = execution.run_in(ctx, job.spec.run, settings, timeout=job.timeout)
    report = _report(job.name, trigger, run_id, started, ending, ctx)
    lost = ending.lost or execution.known_lost(held)
    report.next_due_at = _record(app, job, report, lost)
    if not lost and report.finished_at is not None:
        _prune_history(app, logger, job, report.finished_at, run_id)
    _log_outcome(logger, report)
    _notify(app, logger, "run_finished", job, report)
    return report


def _claim_start(app: App, job: JobConfig, trigger: Trigger, started: datetime, host: str, pid: int,
                 row: Any, owed_only: bool) -> int:
    """Record the start and, for a scheduled run, claim the slot it serves in the same transaction: the
    database's fence, whatever the lock believed (jobs.slots). Raises slots.SlotTaken when refused.
    An owed run only (overlap = "buffer_one", the schedule not due) claims no slot."""
    slot = None if owed_only else slots.served(job, row, trigger, started)
    bound = app.config.locks.host_loss_bound
    return db_call(app, lambda: tracking.start_run(app.engine, job, trigger, started, host, pid, slot=slot,
                                                   abandoned_after=bound), "recording the start")


def _report(name: str, trigger: Trigger, run_id: int | None, started: datetime, ending: execution.Ending,
            ctx: JobContext) -> RunReport:
    """The run's report: how it ended and what its context counted."""
    return RunReport(name, ending.status, trigger, run_id=run_id, started_at=started, finished_at=clock.utcnow(),
                     counts=dict(ctx.counts), error=ending.error, temporary=ending.temporary, signal=ending.signal,
                     details=list(ctx.details), transactions=ctx.transactions,
                     longest_transaction_seconds=ctx.longest_transaction, largest_batch_items=ctx.largest_batch)


def _record(app: App, job: JobConfig, report: RunReport, lost: bool) -> datetime | None:
    """The outcome, in its own transaction; a run that lost its lock gets a short budget for it."""
    run_id, started, finished = report.run_id, report.started_at, report.finished_at
    assert run_id is not None and started is not None and finished is not None  # a run that started has them
    return db_call(
        app,
        lambda: tracking.finish_run(app.engine, job, run_id, report.status, started, finished, report.counts,
                                    report.error,
                                    keep=tracking.kept(job, report.status, report.trigger, report.counts)),
        "recording the outcome",
        policy=execution.lost_lock_policy(app) if lost else None,
    )


def _prune_history(app: App, logger: logging.LoggerAdapter, job: JobConfig, finished: datetime,
                   run_id: int) -> None:
    """Housekeeping after the outcome is recorded: a failure here is a warning, never the run's outcome.
    Each outcome has its own retention (job.history); the run that just finished is spared."""
    try:
        tracking.prune_history(app.engine, job.name, finished, job.history, spare=run_id)
    except Exception as exc:  # noqa: BLE001
        logger.warning("pruning the run history failed: %s", one_line(exc))


def _notify(app: App, logger: logging.LoggerAdapter, hook: str, *args: Any) -> None:
    """Tell every observer, dramatiq-style: one failing observer cannot break the run or the others."""
    for observer in app.observers:
        method = getattr(observer, hook, None)
        if method is None:
            continue
        try:
            method(*args)
        except Exception as exc:  # noqa: BLE001
            logger.warning("%s of %s failed: %s", hook, type(observer).__name__, one_line(exc))


def _log_outcome(logger: logging.LoggerAdapter, report: RunReport) -> None:
    counts = " ".join(f"{k}={v}" for k, v in sorted(report.counts.items())) or "no items"
    duration = f"{report.duration_seconds:.3f}s"
    if report.status is RunStatus.SUCCEEDED:
        logger.info("succeeded in %s: %s", duration, counts)
    else:
        logger.error("%s after %s (%s): %s", report.status.value, duration, counts, report.error)


def _dry_run(app: App, job: JobConfig, trigger: Trigger, settings: Any) -> RunReport:
    """Runs the job with every transaction rolled back; records nothing, takes no lock."""
    started = clock.utcnow()
    with signals.graceful_stop() as stop:
        ctx = JobContext(job=job.name, run_id=None, now=started, engine=app.engine,
                         log=job_logger(job.name, None), retry=app.config.retry, stop=stop, held=None,
                         dry_run=True, progress=app.progress(job.name))
        ending = execution.run_in(ctx, job.spec.run, settings, timeout=None)
    if ending.signal is not None:
        raise Interrupted(ending.signal)
    if ending.temporary:
        raise DatabaseUnavailable(f"database unreachable during the dry run: {ending.error}")
    failed = ending.status is not RunStatus.SUCCEEDED
    return RunReport(job.name, RunStatus.FAILED if failed else RunStatus.DRY_RUN, trigger, started_at=started,
                     finished_at=clock.utcnow(), counts=dict(ctx.counts), error=ending.error,
                     details=list(ctx.details))


def run_due(app: App, names: list[str], on_report: Callable[[RunReport], None] | None = None) -> list[RunReport]:
    """Every enabled job that is due, one after another.

    A signal stops the sequence, and so does an unreachable database: every later job would spend the
    same retry budget on the same dead server, so the first job's one error line stands for all of them.
    """
    reports = []
    for position, name in enumerate(names):
        unreachable = False
        try:
            report = run_job(app, name, Trigger.SCHEDULED)
        except DatabaseUnavailable as exc:
            report = RunReport(name, RunStatus.FAILED, error=str(exc), temporary=True)
            job_logger(name, None).error("%s; stopped, %d later job(s) not tried", exc, len(names) - position - 1)
            unreachable = True
        except ConfigError as exc:
            report = RunReport(name, RunStatus.FAILED, error=f"configuration: {exc}", config_error=True)
            job_logger(name, None).error("not run: configuration: %s", exc)
        reports.append(report)
        if on_report is not None:
            on_report(report)
        if unreachable or report.status is RunStatus.INTERRUPTED:
            break
    return reports
