"""One subcommand per registered job (options generated from its settings), plus `run-due`."""

from __future__ import annotations

import inspect
from typing import Annotated, Any

import typer

from jobs.spec import JobSpec

from . import actions
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
        return actions.run_job(ctx.find_root().obj, spec.name, force=force, dry_run=dry_run, as_json=json,
                               for_=for_, overrides=overrides)

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
    return actions.run_due(ctx.find_root().obj, as_json=json, for_=for_)
