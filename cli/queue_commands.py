"""The queue's commands: `enqueue`, `work` (cron runs it every minute) and the operators' `queue ...`."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated

import typer

from jobs.errors import UsageError

from . import actions, exit_codes, render
from .errors import handled

if TYPE_CHECKING:
    from jobs.app import App

log = logging.getLogger("cronwarden.cli")
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def register(app: typer.Typer) -> None:
    app.command(name="enqueue")(enqueue)
    app.command(name="work")(work)
    queue = typer.Typer(help="Operate the queue of one-off jobs.", no_args_is_help=True)
    for fn in (list_jobs, show, retry, cancel, prune):
        queue.command(name=fn.__name__.replace("_jobs", ""))(fn)
    app.add_typer(queue, name="queue")


def _app(ctx: typer.Context, *, read_only: bool = False) -> App:
    return ctx.find_root().obj.app(read_only=read_only)


def _parse_args(pairs: list[str]) -> dict[str, str]:
    raw: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--arg {pair!r}: expected KEY=VALUE")
        raw[key.strip()] = value
    return raw


def _parse_at(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--at {text!r}: expected an ISO time such as 2026-01-31T03:00:00Z") from None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


@handled
def enqueue(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="The queue task (e.g. export-user, erase-user).")],
    arg: Annotated[list[str] | None, typer.Option("--arg", metavar="KEY=VALUE",
                                                     help="A task argument; repeat for each.")] = None,
    delay: Annotated[str | None, typer.Option("--delay", metavar="DURATION", help="Run after e.g. 5m.")] = None,
    at: Annotated[str | None, typer.Option("--at", metavar="ISO-TIME",
                                              help="Run at this time (UTC unless it has an offset).")] = None,
    after: Annotated[int | None, typer.Option("--after", metavar="ID",
                                                 help="Run once job ID has succeeded.")] = None,
    key: Annotated[str | None, typer.Option("--key", help="Idempotency key: the same key gives the same job.")] = None,
    json: JsonFlag = False,
) -> int:
    """Add a one-off job to the queue and print its id (with a taken --key: the existing job's, and a warning
    when its task or arguments differ)."""
    from jobs.queue import operations
    from jobs.schedule import parse_duration

    if delay is not None and at is not None:
        raise UsageError("give either --delay or --at, not both")
    try:
        delay_td = parse_duration(delay) if delay is not None else None
    except ValueError as exc:
        raise UsageError(f"--delay: {exc}") from None
    wanted = operations.request(job, _parse_args(arg or []))
    when = _parse_at(at) if at is not None else None
    done = operations.enqueue(_app(ctx), wanted, delay=delay_td, at=when, after=after, key=key)
    if not done.same_arguments:
        log.warning("key %r already names job %d (%s) with other arguments: that job is kept unchanged, "
                    "these arguments were not queued", key, done.id, done.existing_job)
    if json:
        render.json_out({"id": done.id, "existing": done.existing, "same_arguments": done.same_arguments})
    else:
        render.line(str(done.id))
    return exit_codes.EX_OK


@handled
def work(
    ctx: typer.Context,
    max_jobs: Annotated[int | None, typer.Option("--max-jobs", min=1, help="Stop after N jobs.")] = None,
    max_seconds: Annotated[float, typer.Option("--max-seconds", min=0.1,
                                               help="Claim no more after this long (cron: under a minute).")] = 50.0,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=1000,
                                            help="Most rows claimed per transaction (batches adapt to the "
                                                 "tasks' pace up to this).")] = 200,
    json: JsonFlag = False,
) -> int:
    """Run the due queued jobs, then exit: 0 done, 1 a job failed for good, 143/130 interrupted."""
    return actions.work(ctx.find_root().obj, max_jobs=max_jobs, max_seconds=max_seconds, batch_size=batch_size,
                        as_json=json)


@handled
def list_jobs(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option("--status", help="Only jobs in this status.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100000, help="Most recent N jobs.")] = 50,
    json: JsonFlag = False,
) -> int:
    """Queued jobs, newest first."""
    from jobs.queue import operations

    wanted = operations.status_filter(status)
    rows = operations.listing(_app(ctx, read_only=True), wanted, limit)
    if json:
        render.json_out({"jobs": [operations.as_dict(r) for r in rows]})
        return exit_codes.EX_OK
    render.table("queue", ["id", "job", "status", "run at", "attempts", "parent", "last error"],
                 [[str(r["id"]), r["job_name"], r["status"], render.when(r["run_at"]),
                   f"{r['attempts']}/{r['max_attempts']}", str(r["parent_id"] or "-"), (r["last_error"] or "")[:80]]
                  for r in rows])
    return exit_codes.EX_OK


@handled
def show(
    ctx: typer.Context,
    job_id: Annotated[int, typer.Argument(metavar="ID")],
    json: JsonFlag = False,
) -> int:
    """One queued job, every field."""
    from jobs.queue.operations import show as one

    data = one(_app(ctx, read_only=True), job_id)
    if json:
        render.json_out(data)
    else:
        render.table(f"queued job {job_id}", ["field", "value"], [[k, "-" if v is None else str(v)]
                                                                  for k, v in data.items()])
    return exit_codes.EX_OK


@handled
def retry(ctx: typer.Context, job_id: Annotated[int, typer.Argument(metavar="ID")]) -> int:
    """Give a failed or cancelled job its attempts back (it waits again if its parent has not succeeded)."""
    from jobs.queue.operations import retry as give_back

    status = give_back(_app(ctx), job_id)
    render.line(f"job {job_id} is {status}")
    return exit_codes.EX_OK


@handled
def cancel(ctx: typer.Context, job_id: Annotated[int, typer.Argument(metavar="ID")]) -> int:
    """Cancel a waiting job and, transitively, its continuations."""
    from jobs.queue.operations import cancel as stop

    n = stop(_app(ctx), job_id)
    render.line(f"cancelled {n} job(s)")
    return exit_codes.EX_OK


@handled
def prune(
    ctx: typer.Context,
    older_than: Annotated[str, typer.Option("--older-than", metavar="DURATION",
                                            help="Delete finished jobs that finished longer ago.")] = "30d",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=1_000_000,
                                            help="Rows deleted per transaction (at most).")] = 10_000,
) -> int:
    """Delete succeeded, failed and cancelled jobs past their age (run history stays in job_runs).

    In transactions of at most --batch-size rows; SIGTERM/SIGINT stop it between two of them."""
    from jobs.queue.operations import prune as delete
    from jobs.schedule import parse_duration

    try:
        age = parse_duration(older_than)
    except ValueError as exc:
        raise UsageError(f"--older-than: {exc}") from None
    pruned = delete(_app(ctx), age, batch_size=batch_size)
    stopped = pruned.signum is not None
    render.line(f"deleted {pruned.deleted} finished job(s)" + (" before the stop request" if stopped else ""))
    return exit_codes.for_signal(pruned.signum) if stopped else exit_codes.EX_OK
