"""What the run commands do, free of the CLI framework: a job's run, `run-due` and `work`.

The typer commands (cli/job_commands.py, cli/queue_commands.py) parse their line and call these; so does the
front (cli/front.py) for a plain, non-interactive line it fully understands, without building the typer app.
Each takes the invocation's State and returns the exit code; cli/errors.guarded maps what they raise.
"""

from __future__ import annotations

from . import exit_codes, render

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see jobs/__init__.py)
if TYPE_CHECKING:
    from datetime import timedelta
    from typing import Any

    from jobs.outcome import RunReport

    from .state import State


def run_job(state: State, name: str, *, force: bool = False, dry_run: bool = False, as_json: bool = False,
            for_: str | None = None, overrides: dict[str, Any] | None = None) -> int:
    """`JOB`: one run (forced, dry or scheduled), or scheduled ticks for a --for window."""
    from jobs import runner
    from jobs import settings as settings_mod
    from jobs.errors import ConfigError, UsageError
    from jobs.outcome import Trigger

    window = _window(for_, force=force, dry_run=dry_run)
    app = state.app(progress=not as_json)
    job = app.config.job(name)
    try:
        settings = settings_mod.override(job.settings, overrides or {}, lambda field: settings_mod.option_name(field))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if window is not None:
        return _job_for(state, app, name, settings, window, as_json)
    trigger = Trigger.FORCED if force else Trigger.SCHEDULED
    report = runner.run_job(app, name, trigger, dry_run=dry_run, settings=settings)
    code = exit_codes.for_report(report)
    render.run_report(report, as_json=as_json, quiet=state.quiet, exit_code=code)
    if dry_run and not as_json and not render.is_terminal() and not state.quiet:
        render.plain_details(report)
    return code


def run_due(state: State, *, as_json: bool = False, for_: str | None = None) -> int:
    """`run-due`: every enabled recurring job that is due, one after another (or ticks for a --for window)."""
    from jobs import runner, ticking
    from jobs.due import recurring

    window = _window(for_, force=False, dry_run=False)
    app = state.app(progress=not as_json)
    names = recurring(app.config)

    def show(report: RunReport) -> None:
        if not as_json and not state.quiet and render.is_terminal() and not report.status.is_skip:
            render.summary(report)

    if window is not None:
        codes: list[int] = []

        def on_round(reports: list[RunReport]) -> None:
            round_codes = [exit_codes.for_report(r) for r in reports]
            codes.extend(round_codes)
            if as_json:
                render.json_out(render.run_due_json(reports, round_codes, exit_codes.worst(round_codes)))

        ending = ticking.keep_ticking(app.config, names, window,
                                      lambda live: runner.run_due(app, live, on_report=show), on_round)
        return _ended(codes, ending)
    reports = runner.run_due(app, names, on_report=show)
    codes = [exit_codes.for_report(r) for r in reports]
    code = exit_codes.worst(codes)
    if as_json:
        render.json_out(render.run_due_json(reports, codes, code))
    elif not state.quiet and render.is_terminal():
        render.table("run-due", ["job", "status", "duration", "items"],
                     [[r.job, r.status.value, render.seconds(r.duration_seconds), str(sum(r.counts.values()))]
                      for r in reports])
    return code


def work(state: State, *, max_jobs: int | None = None, max_seconds: float = 50.0, batch_size: int = 200,
         as_json: bool = False) -> int:
    """`work`: the due queued jobs, then exit: 0 done, 1 a job failed for good, 143/130 interrupted."""
    from jobs.queue.operations import work as drain

    report = drain(state.app(), max_jobs=max_jobs, max_seconds=max_seconds, batch_size=batch_size)
    if as_json:
        render.json_out(report.as_dict())
    elif not state.quiet or report.failed:
        render.line(f"claimed {report.claimed}: {report.succeeded} succeeded, {report.retrying} to retry, "
                    f"{report.failed} failed, {report.released} given back, {report.reclaimed} taken back "
                    f"from dead workers")
        for err in report.errors:
            render.line(f"job {err['id']} ({err['job']}) failed: {err['error']}")
    if report.signal is not None:
        return exit_codes.for_signal(report.signal)
    return exit_codes.EX_FAILED if report.failed else exit_codes.EX_OK


def _window(text: str | None, *, force: bool, dry_run: bool) -> timedelta | None:
    """The --for window, or None; UsageError for a bad value or a mode that does not tick on slots."""
    if text is None:
        return None
    from jobs import ticking
    from jobs.errors import UsageError

    if force or dry_run:
        raise UsageError(f"--for ticks on the schedule's slots; it cannot be combined with "
                         f"{'--force' if force else '--dry-run'}")
    return ticking.parse_window(text)


def _job_for(state: State, app: Any, name: str, settings: Any, window: timedelta, as_json: bool) -> int:
    """`JOB --for`: scheduled ticks of one job for the window; one JSON object per round with --json."""
    from jobs import runner, ticking

    codes: list[int] = []

    def on_round(reports: list[RunReport]) -> None:
        code = exit_codes.for_report(reports[0])
        codes.append(code)
        if as_json or not reports[0].status.is_skip:
            render.run_report(reports[0], as_json=as_json, quiet=state.quiet, exit_code=code)

    ending = ticking.keep_ticking(app.config, [name], window,
                                  lambda names: [runner.run_job(app, names[0], settings=settings)], on_round)
    return _ended(codes, ending)


def _ended(codes: list[int], ending: Any) -> int:
    """The most serious exit code over all rounds; a loop a signal ended exits as a signalled run does."""
    if ending.signal is not None:
        codes.append(exit_codes.for_signal(ending.signal))
    return exit_codes.worst(codes)
