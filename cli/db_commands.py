"""`db upgrade` (the tool's tables) and `demo` (the embedded SQLite showcase)."""

from __future__ import annotations

from typing import Annotated, Any

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
    from jobs.operations.upgrade import upgrade as bring_up_to_date

    state = ctx.find_root().obj
    app = state.app(creates=True)
    changes = bring_up_to_date(app, app_tables=app_tables)
    if not state.quiet:
        for change in changes:
            render.line(change)
        render.line(f"schema up to date ({app.config.safe_database_url})")
    return exit_codes.EX_OK


@handled
def demo(ctx: typer.Context) -> int:
    """Embedded SQLite in ./cronwarden-demo/: create sample data, run every job once, show the status table."""
    from jobs.operations import demo as demo_run

    from .ops_commands import show_status

    state = ctx.find_root().obj
    state.config_path = str(demo_run.prepare())
    app = state.app(creates=True)
    created = demo_run.seed(app)
    if created:
        render.line(f"sample data in {demo_run.DATABASE}: " + ", ".join(f"{n} {what}" for what, n in created.items()))
    else:
        render.line(f"sample data: already in {demo_run.DATABASE}, kept (delete {demo_run.FOLDER}/ to start over)")
    codes = []

    def show(name: str, report: Any) -> None:  # a RunReport
        counts = ", ".join(f"{k}={v}" for k, v in sorted(report.counts.items())) or "no items"
        render.line(f"{name}: {report.status.value} ({counts})" + (f": {report.error}" if report.error else ""))
        codes.append(exit_codes.for_report(report))

    done = demo_run.run_jobs(app, on_report=show)
    render.line(f"emails: written as .eml files to {done.email_directory}/ (no mail server needed)")
    show_status(app)
    render.line(f"next: cronwarden --config {demo_run.CONFIG} status  (every file of the demo is in "
                f"{demo_run.FOLDER}/)")
    return exit_codes.worst(codes)
