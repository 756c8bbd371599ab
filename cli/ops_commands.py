"""Operator commands: list, status, history, check, unlock, pause, resume."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from . import exit_codes, render
from .errors import handled


def register(app: typer.Typer) -> None:
    for fn in (list_jobs, status, history, check, unlock, pause, resume):
        app.command(name=fn.__name__.replace("_jobs", "").replace("_", "-"))(fn)


def _state(ctx: typer.Context):
    return ctx.find_root().obj


JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


@handled
def list_jobs(
    ctx: typer.Context,
    json: JsonFlag = False) -> int:
    """Jobs, their schedules and whether they are enabled (no database needed)."""
    from jobs.operations.status import configured_jobs, lock_bounds

    app = _state(ctx).app(read_only=True)
    jobs = configured_jobs(app)
    if json:
        render.json_out({"jobs": [j.as_dict() for j in jobs], "locks": lock_bounds(app.config)})
    else:
        render.table("jobs", ["job", "schedule", "enabled", "description"],
                     [[j.name, j.schedule, "yes" if j.enabled else "disabled", j.description] for j in jobs])
    return exit_codes.EX_OK


@handled
def status(
    ctx: typer.Context,
    json: JsonFlag = False) -> int:
    """The tracking table: last run, outcome, next due time and failure streak of every job."""
    from jobs.operations.status import status as status_view

    view = status_view(_state(ctx).app(read_only=True))
    if json:
        render.json_out(view.as_dict())
        return exit_codes.EX_OK
    _status_table(view.jobs)
    for section in view.sections:
        if section.summary:
            render.line(section.summary)
    return exit_codes.EX_OK


def _next_due(job: Any) -> str:
    if job.next_due_at is None:
        return "now"
    from jobs.clock import is_never

    return "never" if is_never(job.next_due_at) else render.when(job.next_due_at)


def show_status(app: Any) -> None:
    """The status table, for commands that end by showing it (demo)."""
    from jobs.operations.status import assess

    _status_table(assess(app))


def _status_table(jobs: Any) -> None:
    render.table(
        "status",
        ["job", "state", "schedule", "last status", "last run", "duration", "next due", "failures", "missed",
         "last failure", "last error"],
        [[j.name, _state_cell(j), j.schedule, j.last_status or "-", render.when(j.last_executed_at),
          render.seconds(j.last_duration_seconds), _next_due(j), str(j.consecutive_failures), str(j.missed_slots),
          render.when(j.last_failure_at), (j.last_error or j.last_failure_error or "")[:80]] for j in jobs],
        drop_first=("duration", "schedule", "last failure", "failures", "missed", "last status", "last run",
                    "last error", "next due"),
        times=("last run", "next due", "last failure"),
    )


def _state_cell(j: Any) -> str:
    """The state, with the holder of a running or stuck job and a run owed by a busy tick (buffer_one)."""
    cell = f"{j.state} on {j.holder}" if j.state in ("running", "stuck") and j.holder else j.state
    return f"{cell}, 1 owed" if j.owed_run_at is not None else cell


@handled
def history(
    ctx: typer.Context,

    job: Annotated[str | None, typer.Argument(help="Only this job.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100000, help="Most recent N runs.")] = 20,
    failed: Annotated[bool, typer.Option("--failed", help="Only runs that did not succeed.")] = False,
    json: JsonFlag = False,
) -> int:
    """Recent runs, newest first: status, trigger, host, duration, items, error (--failed: failures only)."""
    from jobs.operations.status import history as runs

    rows = runs(_state(ctx).app(read_only=True), job, limit, failed=failed)
    if json:
        render.json_out({"runs": rows})
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
    if failed and not rows and not _state(ctx).quiet:
        render.line("no run that did not succeed is kept in the history; `cronwarden status` shows each job's "
                    "last failure, whatever the history's retention")
    return exit_codes.EX_OK


@handled
def check(
    ctx: typer.Context,
    json: JsonFlag = False) -> int:
    """Monitoring: exit 1 when a job is overdue past its grace or failing, 0 otherwise."""
    from jobs.operations.check import check as run_check

    result = run_check(_state(ctx).app(read_only=True))
    code = exit_codes.EX_OK if result.ok else exit_codes.EX_FAILED
    if json:
        render.json_out({"ok": result.ok, "exit_code": code, **result.as_dict()})
        return code
    for j in result.alarming:
        render.line(f"{j.state.upper()} {j.name}: {_alarm_detail(j)}")
    for alarm in result.alarms:
        if alarm.raised and alarm.line:
            render.line(alarm.line)
    if result.ok and not _state(ctx).quiet:
        render.line(f"OK: {len(result.jobs)} jobs, none overdue or failing")
    return code


def _alarm_detail(j: Any) -> str:
    if j.state == "failing":
        return f"{j.consecutive_failures} failure(s) in a row, last: {j.last_error}"
    if j.state == "stuck":
        limit = int(j.stuck_after.total_seconds()) if j.stuck_after is not None else 0
        return (f"running since {render.when(j.last_executed_at)} UTC on {j.holder or j.last_executed_by} "
                f"(run {j.holder_run_id}), longer than its timeout + grace ({limit}s): stop that process; "
                f"if it is gone, the next tick marks the run abandoned")
    if j.last_success_at is None:
        return (f"overdue by {int(j.overdue_seconds)}s: never succeeded since the database first knew it "
                f"({render.when(j.first_seen_at)} UTC); is its crontab line or CronJob missing?")
    return f"overdue by {int(j.overdue_seconds)}s (was due {render.when(j.next_due_at)} UTC)"


@handled
def unlock(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="The job whose lease to break.")]) -> int:
    """Break a stale lease (lease backend). Session and file locks free themselves when their holder dies."""
    from jobs.operations.control import Unlock
    from jobs.operations.control import unlock as break_lock

    result = break_lock(_state(ctx).app(), job)
    outcome = result.unlocked.outcome
    if outcome is Unlock.HELD:
        render.error(f"{job} is locked by a live process ({result.backend} lock); "
                     f"it is freed the moment that process exits: stop it instead")
        return exit_codes.EX_FAILED
    if outcome is Unlock.BROKEN:
        render.line(f"{job}: lease broken")
    else:
        note = result.unlocked.note
        render.line(f"{job}: not locked" + (f" ({note})" if note else ""))
    return exit_codes.EX_OK


def _set_paused(ctx: typer.Context, job: str, paused: bool) -> int:
    from jobs.operations.control import set_paused

    result = set_paused(_state(ctx).app(), job, paused)
    word = "paused" if paused else "resumed"
    render.line(f"{job}: {word}" if result.changed else f"{job}: already {word}")
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
