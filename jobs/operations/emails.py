"""The email queue as operators see it: `emails list`, `emails retry`, its `check` alarm and its metrics.

Registered as an extension of the core's views: the table is the application's, and a deployment
without it (or with email-queue disabled) has nothing to report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..builtin import email_status
from ..errors import ConfigError, UsageError
from ..extensions import Alarm, Extension, register
from .common import retried

if TYPE_CHECKING:
    from ..app import App
    from ..observe.metrics import Family

STATUSES = email_status.STATUSES


def queue_table(app: App) -> str:
    """The table the email-queue job is configured with (it need not be enabled on this host);
    ConfigError naming the fix when it is not there."""
    table = app.config.job("email-queue").settings.table
    if not retried(app, lambda: email_status.exists(app.engine, table), "looking for the email queue"):
        raise ConfigError(f"no table {table!r} in {app.config.safe_database_url} ([jobs.email-queue] table; "
                          f"`cronwarden db upgrade --app-tables` creates the default)")
    return table


def status_filter(status: str | None) -> str | None:
    """A status to list by, checked before anything else is read (UsageError when unknown)."""
    if status is not None and status not in STATUSES:
        raise UsageError(f"--status: must be one of {', '.join(STATUSES)}")
    return status


def listing(app: App, status: str | None, limit: int) -> list[dict[str, Any]]:
    """Emails newest first, without their bodies."""
    table = queue_table(app)
    rows = retried(app, lambda: email_status.listing(app.engine, table, status, limit), "reading the email queue")
    return [dict(r) for r in rows]


def as_dict(row: Any) -> dict[str, Any]:
    return email_status.as_dict(row)


@dataclass(frozen=True)
class SentAgain:
    email_id: int | None  # None: every failed email
    count: int


def send_again(app: App, email_id: int | None) -> SentAgain:
    """Failed emails (one, or all) back to pending with their attempts reset; UsageError when the one
    named is missing or not failed."""
    table = queue_table(app)
    changed = retried(app, lambda: email_status.send_again(app.engine, table, email_id), "retrying emails")
    if email_id is not None and not changed:
        status = retried(app, lambda: email_status.status_of(app.engine, table, email_id), "reading the email queue")
        if status is None:
            raise UsageError(f"no email {email_id} in {table}")
        raise UsageError(f"email {email_id} is {status}; only a failed email is sent again")
    return SentAgain(email_id, changed)


def failed_alarm(app: App, now: datetime) -> Alarm:
    """Emails failed for good within failed_alert_window (see email_status.failed_alarm)."""
    from ..schedule import format_duration

    failures = retried(app, lambda: email_status.failed_alarm(app.config, app.engine, now), "reading the email queue")
    if failures is None:
        return Alarm("failed_emails", None)
    window = format_duration(app.config.job("email-queue").settings.failed_alert_window)
    data = {"count": failures.count, "newest_attempt_at": failures.newest_attempt_at,
            "newest_error": failures.newest_error}
    line = (f"FAILED-EMAILS email-queue: {failures.count} email(s) failed for good in the last {window}, the "
            f"latest at {_when(failures.newest_attempt_at)} UTC: {failures.newest_error}; see "
            f"'cronwarden emails list --status failed', send again with 'cronwarden emails retry'")
    return Alarm("failed_emails", data, line)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def metric_families(app: App, now: datetime) -> list[Family]:
    """Emails waiting and failed for good (the runs succeed either way), when email-queue is enabled."""
    return retried(app, lambda: _families(app, now), "reading the email queue")


def _families(app: App, now: datetime) -> list[Family]:
    from ..observe.metrics import Family

    job = email_status.email_queue(app.config)
    if job is None or not email_status.exists(app.engine, job.settings.table):
        return []
    backlog = email_status.backlog(app.engine, job.settings.table, now)
    emails = Family("cronwarden_emails", "gauge",
                    "Emails in the email-queue table by status: pending (waiting or between retries), sending "
                    "(claimed by a run), failed (given up: 5xx reply or max_attempts; `cronwarden emails "
                    "retry` sends one again). Sent emails are not counted.")
    for status, count in backlog.counts.items():
        emails.add(count, status=status)
    oldest = Family("cronwarden_email_oldest_pending_seconds", "gauge",
                    "Age of the oldest pending or sending email (since it was queued); 0 when none waits.")
    oldest.add(backlog.oldest_pending_seconds or 0.0)
    return [emails, oldest]


EXTENSION = register(Extension("emails", alarms=failed_alarm, metrics=metric_families))
