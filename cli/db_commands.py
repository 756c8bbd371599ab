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


@handled
def upgrade(
    ctx: typer.Context,
    app_tables: Annotated[bool, typer.Option("--app-tables", help="Also create the default application tables "
                                             "(users, refresh_tokens, email_queue, logs) where missing.")] = False,
) -> int:
    """Create or upgrade the tool's tables (idempotent; existing rows are kept)."""
    from jobs import schema
    from jobs.runner import _db

    state = ctx.find_root().obj
    app = state.app()
    changes = _db(app, lambda: schema.upgrade(app.engine), "upgrading the schema")
    if app_tables:
        from jobs.app_tables import create_default_tables

        changes += _db(app, lambda: create_default_tables(app.engine), "creating the application tables")
    if not state.quiet:
        for change in changes:
            render.line(change)
        render.line(f"schema up to date ({app.config.safe_database_url})")
    return exit_codes.EX_OK
