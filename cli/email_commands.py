"""`emails list` and `emails retry`: the email-queue table's failed emails, seen and sent again."""

from __future__ import annotations

from typing import Annotated

import typer

from jobs.errors import UsageError

from . import exit_codes, render
from .errors import handled

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def register(app: typer.Typer) -> None:
    emails = typer.Typer(help="The email-queue table: list emails, send failed ones again.", no_args_is_help=True)
    emails.command(name="list")(list_emails)
    emails.command(name="retry")(retry)
    app.add_typer(emails, name="emails")


@handled
def list_emails(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option("--status", help="Only emails in this status "
                                                  "(pending, sending, sent, failed).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100000, help="Most recent N emails.")] = 50,
    json: JsonFlag = False,
) -> int:
    """Emails newest first, without their bodies: status, attempts, last attempt, last error."""
    from jobs.operations import emails

    wanted = emails.status_filter(status)
    rows = emails.listing(ctx.find_root().obj.app(read_only=True), wanted, limit)
    if json:
        render.json_out({"emails": [emails.as_dict(r) for r in rows]})
        return exit_codes.EX_OK
    render.table("emails", ["id", "to", "subject", "status", "attempts", "last attempt", "last error"],
                 [[str(r["id"]), r["to_address"], r["subject"][:40], r["status"], str(r["attempts"]),
                   render.when(r["last_attempt_at"]), (r["last_error"] or "")[:80]] for r in rows],
                 drop_first=("attempts", "last attempt", "subject", "to", "last error"), times=("last attempt",))
    return exit_codes.EX_OK


@handled
def retry(
    ctx: typer.Context,
    email_id: Annotated[int | None, typer.Argument(metavar="[ID]", help="The failed email to send again.")] = None,
    all_failed: Annotated[bool, typer.Option("--all-failed", help="Every failed email.")] = False,
) -> int:
    """Send failed emails again: back to pending with their attempts reset; the next email-queue run sends them."""
    from jobs.operations.emails import send_again

    if (email_id is None) == (not all_failed):
        raise UsageError("give either an email ID or --all-failed")
    changed = send_again(ctx.find_root().obj.app(), email_id).count
    if not ctx.find_root().obj.quiet:
        if email_id is None and not changed:
            render.line("no failed emails")
        else:
            what = f"email {email_id}" if email_id is not None else f"{changed} failed email(s)"
            render.line(f"{what}: pending again, attempts reset; the next email-queue run sends them")
    return exit_codes.EX_OK
