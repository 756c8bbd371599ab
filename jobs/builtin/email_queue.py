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

import os
import queue as queue_mod
import re
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

from sqlalchemy import and_, bindparam, func, or_, select, update

from cronwarden import (ConfigError, JobContext, JobSpec, PermanentError, Secret, TransientError, identifier, ref,
                        setting)
from jobs.errors import Interrupted, LeaseLost, TimedOut

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.sql.expression import TableClause

    from .mail_transport import Message, Sender

T = TypeVar("T")

_CLAIM_SIZE = 100
"""Rows claimed per transaction (the default batch_size: one claim per default run). It bounds what
a SIGKILL strands until visibility_timeout and how much of a backlog one pod takes at a time; a
claim costs ~3 ms of CPU, ~30 µs a message at this size."""

_RECORD_WINDOW_SECONDS = 0.1
_RECORD_MAX = 1000
"""The recorder sleeps 100 ms after the first outcome of a transaction, then writes all that came
(at most 1000): a transaction costs far more CPU than a message, the sleeping thread does not
fight the sender for the GIL, and a SIGKILL loses at most ~100 ms of outcomes."""

_FROM = re.compile(r"^(?:[^<>]*<[\x21-\x7e]+@[A-Za-z0-9.-]+>|[\x21-\x7e]+@[A-Za-z0-9.-]+)$")
COUNTERS = ("sent", "failed", "retried", "reclaimed")


def _from_address(value: str) -> str | None:
    if "@" not in value or not _FROM.match(value.strip()) or value.count("<") > 1:
        return (f"expected an ASCII address such as noreply@example.com or 'Name <noreply@example.com>', "
                f"got {value!r}")
    return None


@dataclass(frozen=True)
class Settings:
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


@dataclass(frozen=True)
class Claim:
    """Rows this process now holds in `sending`, and the (claimed_by, claimed_at) that prove it.

    limit: how many were asked for (fewer means the queue is drained for now); reclaimed: how
    many of the rows were taken back from a dead sender.
    """

    rows: Sequence[Any]
    by: str
    at: datetime
    limit: int
    reclaimed: int = 0


_TIMES = ("next_attempt_at", "claimed_at", "created_at", "sent_at")
_OTHERS = ("id", "to_address", "subject", "body", "status", "attempts", "last_error", "claimed_by")
QUEUE_COLUMNS = _OTHERS + _TIMES


def queue_table(name: str) -> "TableClause":
    return ref(name, times=_TIMES, others=_OTHERS)


def _claimable(q: "TableClause", now: datetime, stale_before: datetime):  # noqa: ANN202 - a SQL expression
    c = q.c
    due = and_(c.status == "pending", or_(c.next_attempt_at.is_(None), c.next_attempt_at <= now))
    stale = and_(c.status == "sending", or_(c.claimed_at.is_(None), c.claimed_at <= stale_before))
    return or_(due, stale)


def claim(conn: "Connection", q: "TableClause", dialect: str, *, by: str, now: datetime, limit: int,
          stale_before: datetime) -> Claim:
    """Claim up to `limit` rows, oldest first: due pending rows and rows whose sender died.

    Called inside one transaction: SKIP LOCKED (PostgreSQL, MariaDB) hands concurrent claimers
    disjoint rows and the lock holds them until commit; on SQLite the transaction already owns
    the write lock. The UPDATE repeats the condition, so it can only ever take claimable rows.
    Only ids are picked and sorted (from the (status, next_attempt_at) index); the bodies are
    read for the claimed ids alone.
    """
    c = q.c
    claimable = _claimable(q, now, stale_before)
    query = select(c.id, c.status).where(claimable).order_by(c.id).limit(limit)
    if dialect != "sqlite":
        query = query.with_for_update(skip_locked=True)
    picked = conn.execute(query).all()
    if not picked:
        return Claim((), by, now, limit)
    ids = [row.id for row in picked]
    taken = conn.execute(update(q).where(c.id.in_(ids), claimable)
                         .values(status="sending", claimed_by=by, claimed_at=now)).rowcount
    if taken != len(ids):
        raise RuntimeError(f"claimed {taken} of {len(ids)} locked rows; refusing to send any")
    rows = conn.execute(select(c.id, c.to_address, c.subject, c.body, c.attempts, c.next_attempt_at, c.last_error,
                               c.created_at).where(c.id.in_(ids)).order_by(c.id)).all()
    return Claim(rows, by, now, limit, sum(1 for row in picked if row.status == "sending"))


@dataclass(frozen=True)
class Outcome:
    """The new state of one claimed row, written only while the row is still ours."""

    row_id: int
    by: str
    claimed_at: datetime
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    sent_at: datetime | None = None

    def params(self) -> dict[str, Any]:
        return {"b_id": self.row_id, "b_by": self.by, "b_claimed": self.claimed_at, "b_status": self.status,
                "b_attempts": self.attempts, "b_next": self.next_attempt_at, "b_error": self.last_error}


def write_outcomes(conn: "Connection", q: "TableClause", outcomes: Sequence[Outcome]) -> None:
    """Write outcomes, only to rows still claimed by the same claim (a row reclaimed by another
    process is left alone). Sent rows, the common case, take one UPDATE per claim (sent_at: the
    latest acceptance among them); the others one executemany."""
    c = q.c
    sent: dict[tuple[str, datetime], list[Outcome]] = {}
    for outcome in outcomes:
        if outcome.status == "sent":
            sent.setdefault((outcome.by, outcome.claimed_at), []).append(outcome)
    for (by, claimed_at), group in sent.items():
        conn.execute(update(q)
                     .where(c.id.in_([o.row_id for o in group]), c.status == "sending", c.claimed_by == by,
                            c.claimed_at == claimed_at)
                     .values(status="sent", attempts=c.attempts + 1, sent_at=max(o.sent_at for o in group)))
    others = [o.params() for o in outcomes if o.status != "sent"]
    if others:
        conn.execute(update(q)
                     .where(c.id == bindparam("b_id"), c.status == "sending", c.claimed_by == bindparam("b_by"),
                            c.claimed_at == bindparam("b_claimed"))
                     .values(status=bindparam("b_status"), attempts=bindparam("b_attempts"),
                             next_attempt_at=bindparam("b_next"), last_error=bindparam("b_error")), others)


class Recorder:
    """Writes outcomes from a second thread, in transactions that gather what arrives within a short window.

    It writes through plain transactions of its own: an outcome records a send that already
    happened, so it must not be rolled back for a stop request or a lost lease the way a batch
    of work is. Its first failure stops it; `close()` returns what it could not write, and the
    job writes that through ctx.in_transaction (with the configured retries).
    """

    _STOP = object()

    def __init__(self, engine: "Engine", q: "TableClause") -> None:
        self._engine = engine
        self._q = q
        self._inbox: queue_mod.SimpleQueue = queue_mod.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._unwritten: list[Outcome] = []
        self._closing = threading.Event()
        self.error: BaseException | None = None

    def put(self, outcome: Outcome) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="email-queue-recorder", daemon=True)
            self._thread.start()
        self._inbox.put(outcome)

    def check(self) -> None:
        """Raise the writer's error: sending on without bookkeeping would only make duplicates."""
        if self.error is not None:
            raise self.error

    def close(self) -> list[Outcome]:
        if self._thread is not None:
            self._closing.set()
            self._inbox.put(self._STOP)
            self._thread.join()
            self._thread = None
        return self._unwritten

    def _loop(self) -> None:
        while True:
            batch = [self._inbox.get()]
            if batch[0] is not self._STOP:
                self._closing.wait(_RECORD_WINDOW_SECONDS)
            while batch[-1] is not self._STOP and len(batch) < _RECORD_MAX:
                try:
                    batch.append(self._inbox.get_nowait())
                except queue_mod.Empty:
                    break
            stop = batch[-1] is self._STOP
            outcomes = [o for o in batch if o is not self._STOP]
            if outcomes and self.error is None:
                try:
                    with self._engine.begin() as conn:
                        write_outcomes(conn, self._q, outcomes)
                except Exception as exc:  # noqa: BLE001 - handed to the main thread
                    self.error = exc
                    self._unwritten.extend(outcomes)
            else:
                self._unwritten.extend(outcomes)
            if stop:
                return


def backoff(s: Settings, attempts: int) -> timedelta:
    """retry_base × 2^(attempts−1), at most retry_max."""
    return min(s.retry_base * 2 ** min(max(attempts - 1, 0), 30), s.retry_max)


def message_id(row: Any, table: str, domain: str) -> str:
    """The same for every send of a row, from any host: what lets a receiver drop a resend."""
    stamp = f".{row.created_at:%Y%m%d%H%M%S%f}" if row.created_at is not None else ""
    return f"<{row.id}{stamp}.{table}@{domain}>"


def _emails(n: int) -> str:
    return f"{n} email" if n == 1 else f"{n} emails"


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Claims:
    """Hands out claims of up to `_CLAIM_SIZE` rows, `batch_size` rows in all, one claim ahead.

    While one claim is being sent the next is taken on a helper thread, so a claim's round
    trips and commit overlap the SMTP exchanges. Claims go through ctx.in_transaction (stop,
    timeout and lock checked, transient errors retried), never two at once. A claim that
    comes back short means the queue is drained for now: no further claim is taken.
    """

    def __init__(self, ctx: JobContext, s: Settings, q: "TableClause") -> None:
        self._ctx, self._s, self._q = ctx, s, q
        self._owner = _owner()
        self._left = s.batch_size
        self._ahead: "Future[Claim] | None" = None
        self._pool: "ThreadPoolExecutor | None" = None

    def next(self) -> Claim | None:
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            held = ahead.result()
        elif self._left > 0:
            held = self._take(min(self._left, _CLAIM_SIZE))
        else:
            return None
        self._left = self._left - len(held.rows) if len(held.rows) == held.limit else 0
        if self._left > 0:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="email-queue-claims")
            self._ahead = self._pool.submit(self._take, min(self._left, _CLAIM_SIZE))
        return held if held.rows else None

    def close(self) -> Claim | None:
        """Stop claiming; returns the claim taken ahead and never sent (its rows must be released)."""
        ahead, self._ahead = self._ahead, None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if ahead is None or ahead.exception() is not None:
            return None
        return ahead.result()

    def _take(self, limit: int) -> Claim:
        now = self._ctx.current_time()
        return self._ctx.in_transaction(claim, self._q, self._ctx.dialect, by=self._owner, now=now, limit=limit,
                                        stale_before=now - self._s.visibility_timeout)


def run(ctx: JobContext, s: Settings) -> None:
    for name in COUNTERS:
        ctx.count(name, 0)
    q = queue_table(s.table)
    if ctx.dry_run:
        _preview(ctx, s, q)
        return
    from .mail_transport import Sender

    sender = Sender.parse(s.from_address)
    transport = _transport(s, sender)
    recorder = Recorder(ctx.engine, q)
    claims = Claims(ctx, s, q)
    try:
        while (held := claims.next()) is not None:
            if held.reclaimed:
                ctx.count("reclaimed", held.reclaimed)
                ctx.log.warning("reclaimed %s left in 'sending' longer than %s (their sender died); "
                                "sending them again", _emails(held.reclaimed), s.visibility_timeout)
            _deliver(ctx, s, held, transport, sender, recorder)
    finally:
        unused = claims.close()
        for row in unused.rows if unused is not None else ():
            recorder.put(_outcome(unused, row, "pending", row.attempts, row.next_attempt_at, row.last_error))
        transport.close()
        unwritten = recorder.close()
        if unwritten:
            ctx.log.warning("writing the outcomes of %s the recorder could not write", _emails(len(unwritten)))
            _finish(ctx, write_outcomes, q, unwritten)


def _deliver(ctx: JobContext, s: Settings, held: Claim, transport: Any, sender: "Sender",
             recorder: Recorder) -> None:
    """Send one claim's rows in order; whatever is not sent when this returns or raises goes back to pending."""
    from .mail_transport import Deferred, Refused, Rejected, Unavailable

    unsent = list(reversed(held.rows))
    try:
        while unsent:
            ctx.checkpoint()
            recorder.check()
            if ctx.current_time() - held.at >= s.visibility_timeout / 2:
                ctx.log.info("claim older than half of visibility_timeout; releasing %s", _emails(len(unsent)))
                return
            row = unsent[-1]
            try:
                transport.send(_compose(row, s, sender, held))
            except Deferred as exc:
                _retry_later(ctx, s, held, row, str(exc), recorder)
            except Rejected as exc:
                _record(ctx, recorder, _outcome(held, row, "failed", row.attempts + 1, row.next_attempt_at,
                                                str(exc)), "failed")
            else:
                _record(ctx, recorder, _outcome(held, row, "sent", row.attempts + 1, row.next_attempt_at,
                                                row.last_error, sent_at=ctx.current_time()), "sent")
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
            recorder.put(_outcome(held, row, "pending", row.attempts, row.next_attempt_at, row.last_error))


def _compose(row: Any, s: Settings, sender: "Sender", held: Claim) -> "Message":
    """The row's message; a row that cannot become one (NULL columns, say) fails alone, never the queue."""
    from .mail_transport import Rejected, compose

    try:
        return compose(name=f"{row.id:010d}", sender=sender, to_address=row.to_address, subject=row.subject,
                       body=row.body, message_id=message_id(row, s.table, sender.domain),
                       date=row.created_at or held.at)
    except Rejected:
        raise
    except Exception as exc:  # noqa: BLE001 - a poison row must not block every later run
        raise Rejected(f"cannot compose the message: {type(exc).__name__}: {exc}") from None


def _retry_later(ctx: JobContext, s: Settings, held: Claim, row: Any, error: str, recorder: Recorder) -> None:
    attempts = row.attempts + 1
    if attempts >= s.max_attempts:
        _record(ctx, recorder, _outcome(held, row, "failed", attempts, row.next_attempt_at,
                                        f"gave up after {attempts} attempts: {error}"), "failed")
    else:
        _record(ctx, recorder, _outcome(held, row, "pending", attempts, ctx.current_time() + backoff(s, attempts),
                                        error), "retried")


def _outcome(held: Claim, row: Any, status: str, attempts: int, next_attempt_at: datetime | None,
             last_error: str | None, sent_at: datetime | None = None) -> Outcome:
    return Outcome(row.id, held.by, held.at, status, attempts, next_attempt_at, last_error, sent_at)


def _record(ctx: JobContext, recorder: Recorder, outcome: Outcome, counter: str) -> None:
    recorder.put(outcome)
    ctx.count(counter)


def _finish(ctx: JobContext, fn: Callable[..., T], *args: Any) -> T:
    """Write what already happened even after a stop: in_transaction refuses to start once SIGTERM
    or the timeout has come, and rolls back on a lost lease, so fall back to one plain transaction."""
    try:
        return ctx.in_transaction(fn, *args)
    except (Interrupted, TimedOut, LeaseLost):
        with ctx.engine.begin() as conn:
            return fn(conn, *args)


def _transport(s: Settings, sender: "Sender") -> Any:
    from .mail_transport import FileTransport, SmtpTransport

    if s.transport == "file":
        return FileTransport(s.file_directory)
    return SmtpTransport(host=s.smtp_host, port=s.smtp_port, security=s.smtp_security,
                         username=s.smtp_username, password=s.smtp_password,
                         timeout=s.smtp_timeout.total_seconds(), sender=sender)


def _preview(ctx: JobContext, s: Settings, q: "TableClause") -> None:
    """Dry run: count what a run would send now (reclaims included); no claim, no connection."""
    now = ctx.now
    rows = ctx.in_transaction(lambda conn: conn.execute(
        select(q.c.status, func.count()).where(_claimable(q, now, now - s.visibility_timeout))
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
    needs=lambda s: {s.table: QUEUE_COLUMNS},
)
