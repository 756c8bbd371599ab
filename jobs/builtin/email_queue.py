"""Send queued emails over SMTP (or into .eml files), at least once, with per-row retries.

A row moves pending → sending → sent | pending (retry later) | failed, and is never deleted:

- claim: due rows (`pending` with next_attempt_at NULL or past) become `sending` with claimed_by
  (host:pid) and claimed_at, in their own short transaction, `_CLAIM_SIZE` rows at a time (the
  next claim is taken while the current one is sent). PostgreSQL and MariaDB (10.6+) lock
  candidates with FOR UPDATE SKIP LOCKED, so concurrent runs (pods) share a backlog without
  ever taking the same row; SQLite's write lock (BEGIN IMMEDIATE) serialises claimers, and the
  UPDATE re-checks the condition anyway.
- send: one connection for the whole run (a dropped or timed-out connection is reopened once
  and the message resent). Every attempt counts in `attempts`. Accepted → `sent`, sent_at. A
  4xx reply → `pending` again with next_attempt_at = now + retry_base × 2^(attempts−1) (at
  most retry_max) and the reply in last_error; at max_attempts → `failed`. A 5xx reply, or a
  row that cannot become a message (bad address, NULL columns) → `failed` at once.
- crash: a row left `sending` longer than visibility_timeout (its process died) is claimed and
  sent again. Delivery is therefore at-least-once; each message's Message-ID is derived from
  the row (id, created_at, table, the From domain), the same on every resend from every host,
  so a receiver can drop the duplicate. A claim is only sent from during the first half of
  visibility_timeout, so a slow live sender never races the reclaim of its own rows.

Outcomes are written by a second thread in group commits (what arrived within 100 ms), so
commits overlap the SMTP round trips instead of adding to them. A SIGKILL loses at most those
~100 ms of outcomes (their rows are resent after visibility_timeout: duplicates, never losses)
and strands the rows of the claims in hand (at most two) until then. SIGTERM and the run's
timeout stop at a message boundary: outcomes are written and the claimed but unsent rows go
back to `pending` untouched.

The run fails when the transport is unusable, and only then:
- the SMTP server cannot be reached, or loses the connection again right after a reconnect:
  the claimed rows are retried later like a 4xx (the attempt counts, so mail for a server down
  for long ends `failed` rather than going out hours late) and the run raises TransientError
  (exit 75, EX_TEMPFAIL, as sendmail uses it). Recording the run as failed is what lets
  `cronwarden check` report a mail server that stays down, and the job's retry_delays then
  space out the runs instead of knocking every 10 s;
- the server refuses us (login, TLS, the sender address) or the outbox cannot be written: a
  configuration problem, so rows are released untouched (no attempt burnt) and the run raises
  PermanentError (exit 1).
Per-message replies (4xx, 5xx) are outcomes of rows, not of the run: the run succeeds and
reports them in its counts (sent, failed, retried, reclaimed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cronwarden import ConfigError, JobSpec, PermanentError, Secret, TransientError, identifier, setting

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see jobs/__init__.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from sqlalchemy.sql.expression import TableClause

    from cronwarden import GroupRecorder, JobContext

    from .email_rows import Claim, Outcome
    from .mail_transport import Message, Sender

_CLAIM_SIZE = 100
"""Rows claimed per transaction (the default batch_size: one claim per default run). It bounds what
a SIGKILL strands until visibility_timeout and how much of a backlog one pod takes at a time; a
claim costs ~3 ms of CPU, ~30 µs a message at this size."""

_RECORD_WINDOW_SECONDS = 0.1
_RECORD_MAX = 1000
"""The recorder sleeps 100 ms after the first outcome of a transaction, then writes all that came
(at most 1000): a transaction costs far more CPU than a message, the sleeping thread does not
fight the sender for the GIL, and a SIGKILL loses at most ~100 ms of outcomes."""

_FROM = r"^(?:[^<>]*<[\x21-\x7e]+@[A-Za-z0-9.-]+>|[\x21-\x7e]+@[A-Za-z0-9.-]+)$"  # compiled by re at the first check
COUNTERS = ("sent", "failed", "retried", "reclaimed")


def _from_address(value: str) -> str | None:
    if "@" not in value or not re.match(_FROM, value.strip()) or value.count("<") > 1:
        return (f"expected an ASCII address such as noreply@example.com or 'Name <noreply@example.com>', "
                f"got {value!r}")
    return None


@dataclass(frozen=True)
class Settings:
    """The job's own keys, in `[jobs.email-queue]`."""

    batch_size: int = setting(100, min=1, max=100_000, cli=True, help="Emails sent per run at most.")
    max_attempts: int = setting(5, min=1, max=100, help="Delivery attempts before a row is marked failed.")
    retry_base: timedelta = setting(timedelta(seconds=60), min=1, max=86_400,
                                    help="Delay after a first transient failure; doubles with each attempt.")
    retry_max: timedelta = setting(timedelta(hours=6), min=1, max=7 * 86_400,
                                   help="Longest delay between two attempts of a row.")
    visibility_timeout: timedelta = setting(timedelta(minutes=10), min=10, max=86_400,
                                            help="After this long in `sending`, a row's sender is "
                                                 "presumed dead and the row is sent again.")
    transport: str = setting("smtp", choices=("smtp", "file"), help="smtp, or file (.eml files in file_directory).")
    file_directory: Path = setting(Path("outbox"), help="Where the file transport writes <id>.eml.")
    smtp_host: str = setting("localhost", help="SMTP server.")
    smtp_port: int = setting(25, min=1, max=65535, help="SMTP port (25, 587 for starttls, 465 for tls).")
    smtp_security: str = setting("none", choices=("none", "starttls", "tls"), help="Transport security.")
    smtp_username: str = setting("", help="Login name; empty means no login.")
    smtp_password: Secret = setting(Secret(""), env="CRONWARDEN_SMTP_PASSWORD",
                                    help="From the environment only (or its _FILE twin).")
    smtp_timeout: timedelta = setting(timedelta(seconds=30), min=1, max=600,
                                      help="Socket timeout of each SMTP exchange.")
    from_address: str = setting("noreply@example.com", check=_from_address,
                                help="Envelope sender and From header; its domain ends every Message-ID.")
    table: str = setting("email_queue", check=identifier, help="The queue table.")
    alert_on_failed: bool = setting(True, help="`cronwarden check` alarms (exit 1) while an email has failed "
                                               "within failed_alert_window.")
    failed_alert_window: timedelta = setting(timedelta(hours=24), min=60, max=90 * 86_400,
                                             help="How long a failed email keeps `check` alarming: at least "
                                                  "the interval between two checks.")


def validate(s: Settings) -> None:
    """Checks that only matter when the job runs (exit 78 before anything is touched)."""
    where = "[jobs.email-queue]"
    if s.transport == "smtp" and s.smtp_username and not s.smtp_password:
        raise ConfigError(f"{where} smtp_username: set, but CRONWARDEN_SMTP_PASSWORD (or _FILE) is not")
    if s.transport == "smtp" and s.smtp_password and not s.smtp_username:
        raise ConfigError(f"{where} smtp_username: empty, but CRONWARDEN_SMTP_PASSWORD is set")
    if s.visibility_timeout < 10 * s.smtp_timeout:
        raise ConfigError(f"{where} visibility_timeout: must be at least 10 × smtp_timeout (a claim is sent "
                          f"from for half of it, and one message may wait on several timeouts)")


def _needs(s: Settings) -> dict[str, tuple[str, ...]]:
    """The queue table's columns the run uses (email_rows, with its SQL, is imported by a run only)."""
    from .email_rows import QUEUE_COLUMNS

    return {s.table: QUEUE_COLUMNS}


def backoff(s: Settings, attempts: int) -> timedelta:
    """retry_base × 2^(attempts−1), at most retry_max."""
    return min(s.retry_base * 2 ** min(max(attempts - 1, 0), 30), s.retry_max)


def _emails(n: int) -> str:
    return f"{n} email" if n == 1 else f"{n} emails"


def run(ctx: JobContext, s: Settings) -> None:
    from .email_rows import claim, queue_table, write_outcomes

    for name in COUNTERS:
        ctx.count(name, 0)
    q = queue_table(s.table)
    if ctx.dry_run:
        _preview(ctx, s, q)
        return
    from .mail_transport import Sender

    sender = Sender.parse(s.from_address)
    transport = _transport(s, sender)
    recorder = ctx.recorder(write_outcomes, q, window=_RECORD_WINDOW_SECONDS, max_items=_RECORD_MAX)
    owner = ctx.owner

    def take(limit: int) -> Claim:
        now = ctx.current_time()
        return ctx.in_transaction(claim, q, ctx.dialect, by=owner, now=now, limit=limit,
                                  stale_before=now - s.visibility_timeout)

    # The next claim is taken on a helper thread while this one is sent, so its round trips and commit
    # overlap the SMTP exchanges; one that comes back short means the queue is drained for now.
    claims = ctx.claims_ahead(take, lambda held: len(held.rows), total=s.batch_size, chunk=_CLAIM_SIZE)
    try:
        while (held := claims.next()) is not None:
            if held.reclaimed:
                ctx.count("reclaimed", held.reclaimed)
                ctx.log.warning("reclaimed %s left in 'sending' longer than %s (their sender died); "
                                "sending them again", _emails(held.reclaimed), s.visibility_timeout)
            _deliver(ctx, s, held, transport, sender, recorder)
    finally:
        unused = claims.close()
        if unused is not None:
            for row in unused.rows:
                recorder.put([_outcome(unused, row, "pending", row.attempts, row.next_attempt_at, row.last_error)])
        transport.close()
        recorder.close()


def _deliver(ctx: JobContext, s: Settings, held: Claim, transport: Any, sender: Sender,
             recorder: GroupRecorder) -> None:
    """Send one claim's rows in order; whatever is not sent when this returns or raises goes back to pending.

    The loop runs once per email, beside the SMTP exchange: what does not change within a claim (the
    release time, the composer, the Outcome class) is looked up before it, not per message."""
    from .email_rows import Outcome
    from .mail_transport import Deferred, Refused, Rejected, Unavailable

    build = _composer(s, sender, held)
    release_at = held.at + s.visibility_timeout / 2
    unsent = list(reversed(held.rows))
    try:
        while unsent:
            ctx.checkpoint()
            recorder.check()
            if ctx.current_time() >= release_at:
                ctx.log.info("claim older than half of visibility_timeout; releasing %s", _emails(len(unsent)))
                return
            row = unsent[-1]
            try:
                transport.send(build(row))
            except Deferred as exc:
                _retry_later(ctx, s, held, row, str(exc), recorder)
            except Rejected as exc:
                _record(ctx, recorder, _outcome(held, row, "failed", row.attempts + 1, row.next_attempt_at,
                                                str(exc)), "failed")
            else:
                recorder.put([Outcome(row.id, held.by, held.at, "sent", row.attempts + 1, row.next_attempt_at,
                                      row.last_error, ctx.current_time())])
                ctx.count("sent")
            unsent.pop()
    except Unavailable as exc:
        rescheduled = _emails(len(unsent))
        for row in reversed(unsent):
            _retry_later(ctx, s, held, row, str(exc), recorder)
        unsent.clear()
        raise TransientError(f"{exc}; {rescheduled} rescheduled") from None  # the run's one error line
    except Refused as exc:
        raise PermanentError(f"{exc}; {_emails(len(unsent))} left pending, untouched") from None
    finally:
        for row in unsent:
            recorder.put([_outcome(held, row, "pending", row.attempts, row.next_attempt_at, row.last_error)])


def _composer(s: Settings, sender: Sender, held: Claim) -> Callable[[Any], Message]:
    """row → its message; a row that cannot become one (NULL columns, say) fails alone, never the queue."""
    from .email_rows import message_id
    from .mail_transport import Rejected, compose

    table, domain = s.table, sender.domain

    def build(row: Any) -> Message:
        try:
            return compose(name=f"{row.id:010d}", sender=sender, to_address=row.to_address, subject=row.subject,
                           body=row.body, message_id=message_id(row, table, domain), date=row.created_at or held.at)
        except Rejected:
            raise
        except Exception as exc:  # noqa: BLE001 - a poison row must not block every later run
            raise Rejected(f"cannot compose the message: {type(exc).__name__}: {exc}") from None

    return build


def _retry_later(ctx: JobContext, s: Settings, held: Claim, row: Any, error: str,
                 recorder: GroupRecorder) -> None:
    attempts = row.attempts + 1
    if attempts >= s.max_attempts:
        _record(ctx, recorder, _outcome(held, row, "failed", attempts, row.next_attempt_at,
                                        f"gave up after {attempts} attempts: {error}"), "failed")
    else:
        _record(ctx, recorder, _outcome(held, row, "pending", attempts, ctx.current_time() + backoff(s, attempts),
                                        error), "retried")


def _outcome(held: Claim, row: Any, status: str, attempts: int, next_attempt_at: datetime | None,
             last_error: str | None, sent_at: datetime | None = None) -> Outcome:
    from .email_rows import Outcome

    return Outcome(row.id, held.by, held.at, status, attempts, next_attempt_at, last_error, sent_at)


def _record(ctx: JobContext, recorder: GroupRecorder, outcome: Outcome, counter: str) -> None:
    recorder.put([outcome])
    ctx.count(counter)


def _transport(s: Settings, sender: Sender) -> Any:
    from .mail_transport import FileTransport, SmtpTransport

    if s.transport == "file":
        return FileTransport(s.file_directory)
    return SmtpTransport(host=s.smtp_host, port=s.smtp_port, security=s.smtp_security,
                         username=s.smtp_username, password=s.smtp_password,
                         timeout=s.smtp_timeout.total_seconds(), sender=sender)


def _preview(ctx: JobContext, s: Settings, q: TableClause) -> None:
    """Dry run: count what a run would send now (reclaims included); no claim, no connection."""
    from sqlalchemy import func, select

    from .email_rows import claimable

    now = ctx.now
    rows = ctx.in_transaction(lambda conn: conn.execute(
        select(q.c.status, func.count()).where(claimable(q, now, now - s.visibility_timeout))
        .group_by(q.c.status)).all())
    by_status = dict(rows)
    due = sum(by_status.values())
    would_send = min(due, s.batch_size)
    reclaim = min(by_status.get("sending", 0), would_send)
    ctx.count("sent", would_send)
    ctx.count("reclaimed", reclaim)
    ctx.detail(f"would send {would_send} of {due} due emails via {s.transport}"
               + (f" ({reclaim} reclaimed from a dead sender)" if reclaim else ""))


JOB = JobSpec(
    name="email-queue",
    run=run,
    settings=Settings,
    schedule="10s",
    description="Send up to batch_size queued emails; retry transient failures later, at least once.",
    validate=validate,
    needs=_needs,
)
