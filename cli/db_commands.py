"""`db upgrade` (the tool's tables) and `demo` (the embedded SQLite showcase)."""

from __future__ import annotations

from typing import Annotated

import typer

from . import exit_codes, render
from .errors import handled


def register(app: typer.Typer) -> None:
    db = typer.Typer(help="The tool's own tables.", no_args_is_help=True)
    db.command(name="upgrade")(upgrade)
    app.add_typer(db, name="db")
    app.command(name="demo")(demo)


@handled
def upgrade(
    ctx: typer.Context,
    app_tables: Annotated[bool, typer.Option("--app-tables", help="Also create the default application tables "
                                             "(users, refresh_tokens, email_queue, logs) where missing.")] = False,
) -> int:
    """Create or upgrade the tool's tables (idempotent; existing rows are kept).

    It also notes every enabled job as known from now on, so `check` reports one that never runs.
    """
    from jobs import schema
    from jobs.execution import db_call

    state = ctx.find_root().obj
    app = state.app(creates=True)
    changes = db_call(app, lambda: schema.upgrade(app.engine), "upgrading the schema")
    from jobs import clock, tracking

    db_call(app, lambda: tracking.note_seen(app.engine, tracking.watched(app.config), clock.utcnow()),
        "noting the configured jobs")
    if app_tables:
        from jobs.app_tables import create_default_tables

        changes += db_call(app, lambda: create_default_tables(app.engine), "creating the application tables")
    if not state.quiet:
        for change in changes:
            render.line(change)
        render.line(f"schema up to date ({app.config.safe_database_url})")
    return exit_codes.EX_OK


@handled
def demo(ctx: typer.Context) -> int:
    """Embedded SQLite in ./cronwarden-demo/: create sample data, run every job once, show the status table."""
    import dataclasses
    import secrets as random_secrets

    from jobs import clock, schema
    from jobs import demo as demo_data
    from jobs.errors import UsageError
    from jobs.outcome import Trigger
    from jobs.runner import run_job
    from jobs.secrets import Secret

    state = ctx.find_root().obj
    state.config_path = str(demo_data.write_config())
    app = state.app(creates=True)
    if app.engine.dialect.name != "sqlite":
        raise UsageError("demo runs on the embedded SQLite database only; unset CRONWARDEN_DATABASE_URL")
    schema.upgrade(app.engine)
    settings = {name: job.settings for name, job in app.config.jobs.items()}
    created = demo_data.seed(app.engine, clock.utcnow(), settings["log-cleanup"].log_directory)
    if created:
        render.line(f"sample data in {demo_data.DATABASE}: " + ", ".join(f"{n} {what}" for what, n in created.items()))
    else:
        render.line(f"sample data: already in {demo_data.DATABASE}, kept (delete {demo_data.FOLDER}/ to start over)")
    for name, value in settings.items():
        changes = {f.name: Secret(random_secrets.token_urlsafe(24)) for f in dataclasses.fields(value)
                   if isinstance(getattr(value, f.name), Secret) and not getattr(value, f.name)}
        settings[name] = dataclasses.replace(value, **changes)
    codes = []
    for name, job in app.config.jobs.items():
        if not job.enabled:
            continue
        report = run_job(app, name, Trigger.MANUAL, settings=settings[name])
        counts = ", ".join(f"{k}={v}" for k, v in sorted(report.counts.items())) or "no items"
        render.line(f"{name}: {report.status.value} ({counts})" + (f": {report.error}" if report.error else ""))
        codes.append(exit_codes.for_report(report))
    render.line(f"emails: written as .eml files to {settings['email-queue'].file_directory}/ (no mail server needed)")
    from .ops_commands import show_status

    show_status(app)
    render.line(f"next: cronwarden --config {demo_data.CONFIG} status  (every file of the demo is in "
                f"{demo_data.FOLDER}/)")
    return exit_codes.worst(codes)
