"""`emails list` and `emails retry`: the email-queue table's failed emails, seen and sent again."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from jobs.errors import ConfigError, UsageError

from . import exit_codes, render
from .errors import handled

if TYPE_CHECKING:
    from jobs.app import App

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def register(app: typer.Typer) -> None:
    emails = typer.Typer(help="The email-queue table: list emails, send failed ones again.", no_args_is_help=True)
    emails.command(name="list")(list_emails)
    emails.command(name="retry")(retry)
    app.add_typer(emails, name="emails")


def _table(app: "App") -> str:
    """The queue table the email-queue job is configured with (it need not be enabled on this host)."""
    from jobs.builtin import email_status
    from jobs.execution import db_call

    table = app.config.job("email-queue").settings.table
    if not db_call(app, lambda: email_status.exists(app.engine, table), "looking for the email queue"):
        raise ConfigError(f"no table {table!r} in {app.config.safe_database_url} ([jobs.email-queue] table; "
                          f"`cronwarden db upgrade --app-tables` creates the default)")
    return table


@handled
def list_emails(
    ctx: typer.Context,
    status: Annotated[Optional[str], typer.Option("--status", help="Only emails in this status "
                                                  "(pending, sending, sent, failed).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100000, help="Most recent N emails.")] = 50,
    json: JsonFlag = False,
) -> int:
    """Emails newest first, without their bodies: status, attempts, last attempt, last error."""
    from jobs.builtin import email_status
    from jobs.execution import db_call

    if status is not None and status not in email_status.STATUSES:
        raise UsageError(f"--status: must be one of {', '.join(email_status.STATUSES)}")
    app = ctx.find_root().obj.app(read_only=True)
    table = _table(app)
    rows = db_call(app, lambda: email_status.listing(app.engine, table, status, limit), "reading the email queue")
    if json:
        render.json_out({"emails": [email_status.as_dict(r) for r in rows]})
        return exit_codes.EX_OK
    render.table("emails", ["id", "to", "subject", "status", "attempts", "last attempt", "last error"],
                 [[str(r["id"]), r["to_address"], r["subject"][:40], r["status"], str(r["attempts"]),
                   render.when(r["last_attempt_at"]), (r["last_error"] or "")[:80]] for r in rows],
                 drop_first=("attempts", "last attempt", "subject", "to", "last error"), times=("last attempt",))
    return exit_codes.EX_OK


@handled
def retry(
    ctx: typer.Context,
    email_id: Annotated[Optional[int], typer.Argument(metavar="[ID]", help="The failed email to send again.")] = None,
    all_failed: Annotated[bool, typer.Option("--all-failed", help="Every failed email.")] = False,
) -> int:
    """Send failed emails again: back to pending with their attempts reset; the next email-queue run sends them."""
    from jobs.builtin import email_status
    from jobs.execution import db_call

    if (email_id is None) == (not all_failed):
        raise UsageError("give either an email ID or --all-failed")
    app = ctx.find_root().obj.app()
    table = _table(app)
    changed = db_call(app, lambda: email_status.send_again(app.engine, table, email_id), "retrying emails")
    if email_id is not None and not changed:
        status = db_call(app, lambda: email_status.status_of(app.engine, table, email_id), "reading the email queue")
        if status is None:
            raise UsageError(f"no email {email_id} in {table}")
        raise UsageError(f"email {email_id} is {status}; only a failed email is sent again")
    if not ctx.find_root().obj.quiet:
        if email_id is None and not changed:
            render.line("no failed emails")
        else:
            what = f"email {email_id}" if email_id is not None else f"{changed} failed email(s)"
            render.line(f"{what}: pending again, attempts reset; the next email-queue run sends them")
    return exit_codes.EX_OK
