"""One subcommand per registered job (options generated from its settings), plus `run-due`."""

from __future__ import annotations

import inspect
from typing import Annotated, Any

import typer

from jobs.outcome import RunReport, Trigger
from jobs.spec import JobSpec

from . import exit_codes, render
from .errors import handled

_CLI_TYPES = (int, float, str, bool)
FOR_HELP = ("Keep ticking on the schedule's slots in this one process for DURATION (e.g. 55s), "
            "sleeping between runs; SIGTERM ends it.")


def register(app: typer.Typer, specs: tuple[JobSpec, ...]) -> None:
    for spec in specs:
        app.command(name=spec.name, help=_help(spec))(_job_command(spec))
    app.command(name="run-due")(run_due)


def _help(spec: JobSpec) -> str:
    return f"{spec.description or spec.name} (default schedule: {spec.schedule})"


def _setting_options(spec: JobSpec) -> list[tuple[str, Any, str]]:
    """(field name, python type, help) of the settings a job exposes on its command line."""
    from jobs import settings as settings_mod

    options = []
    for f in settings_mod.fields_of(spec.settings):
        kind = settings_mod.type_of(spec.settings, f)
        if f.metadata.get("cli") and kind in _CLI_TYPES:
            options.append((f.name, kind, f.metadata.get("help", "")))
    return options


def _job_command(spec: JobSpec):
    setting_options = _setting_options(spec)

    @handled
    def command(ctx: typer.Context, force: bool = False, dry_run: bool = False, json: bool = False,
                for_: str | None = None, **overrides: Any) -> int:
        from jobs import runner
        from jobs import settings as settings_mod
        from jobs.errors import ConfigError, UsageError

        window = _window(for_, force=force, dry_run=dry_run)
        state = ctx.find_root().obj
        app = state.app(progress=not json)
        job = app.config.job(spec.name)
        try:
            settings = settings_mod.override(job.settings, overrides, lambda name: settings_mod.option_name(name))
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        if window is not None:
            return _job_for(state, app, spec.name, settings, window, json)
        trigger = Trigger.FORCED if force else Trigger.SCHEDULED
        report = runner.run_job(app, spec.name, trigger, dry_run=dry_run, settings=settings)
        code = exit_codes.for_report(report)
        render.run_report(report, as_json=json, quiet=state.quiet, exit_code=code)
        if dry_run and not json and not render.is_terminal() and not state.quiet:
            render.plain_details(report)
        return code

    params = [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        inspect.Parameter("force", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
            bool, typer.Option("--force", help="Skip the due check and pause (never the lock).")]),
        inspect.Parameter("dry_run", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
            bool, typer.Option("--dry-run", help="Report what would change; change and record nothing.")]),
        inspect.Parameter("json", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
            bool, typer.Option("--json", help="Print one JSON object on stdout (with --for: one per round).")]),
        inspect.Parameter("for_", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            str | None, typer.Option("--for", metavar="DURATION", help=FOR_HELP)]),
    ]
    for name, kind, help_text in setting_options:
        option = "--" + name.replace("_", "-")
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[kind | None, typer.Option(option, help=help_text)]))
    command.__signature__ = inspect.Signature(params, return_annotation=int)  # type: ignore[attr-defined]
    command.__name__ = spec.module_name
    return command


def _window(text: str | None, *, force: bool, dry_run: bool):
    """The --for window, or None; UsageError for a bad value or a mode that does not tick on slots."""
    if text is None:
        return None
    from jobs import ticking
    from jobs.errors import UsageError

    if force or dry_run:
        raise UsageError(f"--for ticks on the schedule's slots; it cannot be combined with "
                         f"{'--force' if force else '--dry-run'}")
    return ticking.parse_window(text)


def _job_for(state: Any, app: Any, name: str, settings: Any, window: Any, as_json: bool) -> int:
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


@handled
def run_due(
    ctx: typer.Context,
    json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object with every job's outcome (with --for: one per round).")] = False,
    for_: Annotated[str | None, typer.Option("--for", metavar="DURATION", help=FOR_HELP)] = None,
) -> int:
    """Run every enabled recurring job that is due, one after another (a crontab needs only this line).

    One-shot jobs (schedule "once", such as admin-seed) are run explicitly at deploy time.
    """
    from jobs import runner, ticking
    from jobs.due import recurring

    window = _window(for_, force=False, dry_run=False)
    state = ctx.find_root().obj
    app = state.app(progress=not json)
    names = recurring(app.config)

    def show(report: RunReport) -> None:
        if not json and not state.quiet and render.is_terminal() and not report.status.is_skip:
            render.summary(report)

    if window is not None:
        codes: list[int] = []

        def on_round(reports: list[RunReport]) -> None:
            round_codes = [exit_codes.for_report(r) for r in reports]
            codes.extend(round_codes)
            if json:
                render.json_out(render.run_due_json(reports, round_codes, exit_codes.worst(round_codes)))

        ending = ticking.keep_ticking(app.config, names, window,
                                      lambda live: runner.run_due(app, live, on_report=show), on_round)
        return _ended(codes, ending)
    reports = runner.run_due(app, names, on_report=show)
    codes = [exit_codes.for_report(r) for r in reports]
    code = exit_codes.worst(codes)
    if json:
        render.json_out(render.run_due_json(reports, codes, code))
    elif not state.quiet and render.is_terminal():
        render.table("run-due", ["job", "status", "duration", "items"],
                     [[r.job, r.status.value, render.seconds(r.duration_seconds), str(sum(r.counts.values()))]
                      for r in reports])
    return code
