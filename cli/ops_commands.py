"""Operator commands: list, status, history, check, unlock, pause, resume."""

from __future__ import annotations

import json as json_mod
from typing import Annotated, Optional

import typer

from jobs.errors import UsageError

from . import exit_codes, render
from .errors import handled


def register(app: typer.Typer) -> None:
    for fn in (list_jobs, status, history, check, unlock, pause, resume):
        app.command(name=fn.__name__.replace("_jobs", "").replace("_", "-"))(fn)


def _state(ctx: typer.Context):  # noqa: ANN202
    return ctx.find_root().obj


def _job_name(app, job: str, *, tasks: bool = False) -> str:  # noqa: ANN001
    """A recurring job's name (or, with tasks=True, a queue task's, whose runs share the history)."""
    known = list(app.config.jobs)
    if tasks:
        from jobs.queue import task_specs

        known += list(task_specs())
    if job not in known:
        raise UsageError(f"unknown job {job!r} (known: {', '.join(known)})")
    return job


JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


@handled
def list_jobs(
    ctx: typer.Context,
    json: JsonFlag = False) -> int:
    """Jobs, their schedules and whether they are enabled (no database needed)."""
    app = _state(ctx).app(read_only=True)
    rows = [
        {"job": name, "schedule": job.schedule.describe(), "enabled": job.enabled,
         "timeout": str(job.timeout) if job.timeout else None, "description": job.spec.description}
        for name, job in app.config.jobs.items()
    ]
    if json:
        render.json_out({"jobs": rows, "locks": _lock_bounds(app.config)})
    else:
        render.table("jobs", ["job", "schedule", "enabled", "description"],
                     [[r["job"], r["schedule"], "yes" if r["enabled"] else "disabled", r["description"]] for r in rows])
    return exit_codes.EX_OK


def _lock_bounds(config) -> dict:  # noqa: ANN001
    """The lock backend and what bounds a vanished host, with the session settings derived from
    [locks] host_loss_bound for this database (nothing is connected)."""
    from jobs.db import dialect_of
    from jobs.locks import backend_name

    return {"backend": backend_name(config),
            **config.locks.host_loss().describe(dialect_of(config.database_url))}


def _health(ctx: typer.Context):  # noqa: ANN202
    app = _state(ctx).app(read_only=True)
    return app, _assess(app)


def _assess(app):  # noqa: ANN001, ANN202
    from jobs import clock, health, tracking
    from jobs.execution import db_call

    now = clock.utcnow()
    states = db_call(app, lambda: tracking.all_states(app.engine, tracking.watched(app.config), now),
                 "reading the tracking table")
    return health.assess(app.config, states, now)


@handled
def status(
    ctx: typer.Context,
    json: JsonFlag = False) -> int:
    """The tracking table: last run, outcome, next due time and failure streak of every job."""
    from jobs.queue import queue_depth
    from jobs.execution import db_call

    app, jobs = _health(ctx)
    depth = db_call(app, lambda: queue_depth(app.engine), "reading the queue")
    if json:
        render.json_out({"database": app.config.safe_database_url, "jobs": [j.as_dict() for j in jobs],
                         "queue": depth})
        return exit_codes.EX_OK
    _status_table(jobs)
    waiting = {status: n for status, n in depth["counts"].items() if n}
    if waiting:
        oldest = depth["oldest_due_seconds"]
        render.line("queue: " + ", ".join(f"{n} {status}" for status, n in waiting.items())
                    + (f"; oldest due job waiting {oldest:.0f}s" if oldest else ""))
    return exit_codes.EX_OK


def _next_due(job) -> str:  # noqa: ANN001
    if job.next_due_at is None:
        return "now"
    from jobs.clock import is_never

    return "never" if is_never(job.next_due_at) else render.when(job.next_due_at)


def show_status(app) -> None:  # noqa: ANN001
    """The status table, for commands that end by showing it (demo)."""
    _status_table(_assess(app))


def _status_table(jobs) -> None:  # noqa: ANN001
    render.table(
        "status",
        ["job", "state", "schedule", "last status", "last run", "duration", "next due", "failures", "last error"],
        [[j.name, j.state, j.schedule, j.last_status or "-", render.when(j.last_executed_at),
          render.seconds(j.last_duration_seconds), _next_due(j),
          str(j.consecutive_failures), (j.last_error or "")[:80]] for j in jobs],
        drop_first=("duration", "schedule", "failures", "last status", "last run", "last error", "next due"),
        times=("last run", "next due"),
    )


@handled
def history(
    ctx: typer.Context,
    
    job: Annotated[Optional[str], typer.Argument(help="Only this job.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100000, help="Most recent N runs.")] = 20,
    json: JsonFlag = False,
) -> int:
    """Recent runs, newest first: status, trigger, host, duration, items, error."""
    from jobs import tracking
    from jobs.execution import db_call

    app = _state(ctx).app(read_only=True)
    if job is not None:
        _job_name(app, job, tasks=True)
    rows = db_call(app, lambda: tracking.history(app.engine, job, limit), "reading the history")
    if json:
        render.json_out({"runs": [{**dict(r), "counts": json_mod.loads(r["counts"]) if r["counts"] else {}}
                                  for r in rows]})
        return exit_codes.EX_OK
    render.table(
        "history",
        ["run", "job", "status", "trigger", "started", "duration", "items", "host", "error"],
        [[str(r["id"]), r["job_name"], r["status"], r["trigger"], render.when(r["started_at"]),
          render.seconds(r["duration_seconds"]), str(r["items"]), f"{r['host']}:{r['pid']}",
          (r["error"] or "")[:80]] for r in rows],
        drop_first=("host", "trigger", "duration", "items", "error", "run", "started"),
        times=("started",),
    )
    return exit_codes.EX_OK


@handled
def check(
    ctx: typer.Context,
    json: JsonFlag = False) -> int:
    """Monitoring: exit 1 when a job is overdue past its grace or failing, 0 otherwise."""
    from jobs import clock
    from jobs.builtin.email_status import failed_alarm
    from jobs.execution import db_call

    app, jobs = _health(ctx)
    bad = [j for j in jobs if j.alarming]
    emails = db_call(app, lambda: failed_alarm(app.config, app.engine, clock.utcnow()), "reading the email queue")
    code = exit_codes.EX_FAILED if bad or emails else exit_codes.EX_OK
    if json:
        render.json_out({"ok": code == exit_codes.EX_OK, "exit_code": code,
                         "jobs": [{"job": j.name, "state": j.state, "next_due_at": j.next_due_at,
                                   "overdue_seconds": j.overdue_seconds,
                                   "consecutive_failures": j.consecutive_failures, "last_error": j.last_error}
                                  for j in jobs],
                         "failed_emails": None if emails is None else {
                             "count": emails.count, "newest_attempt_at": emails.newest_attempt_at,
                             "newest_error": emails.newest_error}})
        return code
    for j in bad:
        if j.state == "failing":
            detail = f"{j.consecutive_failures} failure(s) in a row, last: {j.last_error}"
        elif j.state == "stuck":
            detail = f"running since {render.when(j.last_executed_at)} UTC on {j.last_executed_by}"
        elif j.last_success_at is None:
            detail = (f"overdue by {int(j.overdue_seconds)}s: never succeeded since the database first knew it "
                      f"({render.when(j.first_seen_at)} UTC); is its crontab line or CronJob missing?")
        else:
            detail = f"overdue by {int(j.overdue_seconds)}s (was due {render.when(j.next_due_at)} UTC)"
        render.line(f"{j.state.upper()} {j.name}: {detail}")
    if emails is not None:
        from jobs.schedule import format_duration

        window = format_duration(app.config.job("email-queue").settings.failed_alert_window)
        render.line(f"FAILED-EMAILS email-queue: {emails.count} email(s) failed for good in the last {window}, the "
                    f"latest at {render.when(emails.newest_attempt_at)} UTC: {emails.newest_error}; see "
                    f"'cronwarden emails list --status failed', send again with 'cronwarden emails retry'")
    if code == exit_codes.EX_OK and not _state(ctx).quiet:
        render.line(f"OK: {len(jobs)} jobs, none overdue or failing")
    return code


@handled
def unlock(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="The job whose lease to break.")]) -> int:
    """Break a stale lease (lease backend). Session and file locks free themselves when their holder dies."""
    from jobs import locks
    from jobs.execution import db_call

    app = _state(ctx).app()
    _job_name(app, job)
    backend = db_call(app, lambda: app.locks, "choosing the lock backend")
    if hasattr(backend, "break_lease"):
        broke = db_call(app, lambda: backend.break_lease(job), "breaking the lease")
        render.line(f"{job}: lease broken" if broke else f"{job}: not locked")
        return exit_codes.EX_OK
    held = db_call(app, lambda: backend.try_acquire(job, app.config.locks.lease_ttl), "probing the lock")
    if held is None:
        render.error(f"{job} is locked by a live process ({locks.backend_name(app.config)} lock); "
                     f"it is freed the moment that process exits: stop it instead")
        return exit_codes.EX_FAILED
    held.release()
    render.line(f"{job}: not locked ({backend.crash_bound})")
    return exit_codes.EX_OK


def _set_paused(ctx: typer.Context, job: str, paused: bool) -> int:
    from jobs import clock, tracking
    from jobs.locks import owner_id
    from jobs.execution import db_call

    app = _state(ctx).app()
    _job_name(app, job)
    changed = db_call(app, lambda: tracking.set_paused(app.engine, job, paused, owner_id(), clock.utcnow()),
                  "writing the tracking table")
    word = "paused" if paused else "resumed"
    render.line(f"{job}: {word}" if changed else f"{job}: already {word}")
    return exit_codes.EX_OK


@handled
def pause(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="The job to pause on every host.")]) -> int:
    """Stop a job everywhere (stored in the database) until `resume`; --force still runs it."""
    return _set_paused(ctx, job, True)


@handled
def resume(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="The job to resume.")]) -> int:
    """Let a paused job run again on its schedule."""
    return _set_paused(ctx, job, False)
