"""Failed emails are visible and recoverable: metrics, a `check` alarm, `emails list` and `emails retry`,
on the three databases, against a real SMTP server."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import time_machine

from tests.builtin.test_email_queue import NOW, add_emails, queue_rows, run_job

NO_SUCH_USER = "550 5.1.1 <user0@example.org>: no such user"
OTHER_JOBS_OFF = "".join(f"[jobs.{job}]\nenabled = false\n"
                         for job in ("refresh-token-cleanup", "ip-anonymization", "log-cleanup", "admin-seed"))


def _at(cli, ws, when, *args: str):
    with time_machine.travel(when, tick=False):
        return cli(ws, *args)


def _metric(text: str, name: str) -> float:
    return float(next(line for line in text.splitlines() if line.startswith(name + " ")).rsplit(" ", 1)[1])


def test_metrics_count_pending_and_failed_emails_and_the_oldest_pending_age(workspace, engine, cli, smtp_server):
    workspace.write_config(smtp_server.config())
    add_emails(engine, 2)
    smtp_server.script(NO_SUCH_USER)
    assert run_job(cli, workspace)[0] == 0
    add_emails(engine, 3, created=NOW - timedelta(minutes=30))
    text = _at(cli, workspace, NOW, "metrics").stdout
    assert _metric(text, 'cronwarden_emails{status="failed"}') == 1
    assert _metric(text, 'cronwarden_emails{status="pending"}') == 3
    assert _metric(text, 'cronwarden_emails{status="sending"}') == 0
    assert _metric(text, "cronwarden_email_oldest_pending_seconds") == 1800


def test_check_alarms_while_an_email_failed_within_the_window(workspace, engine, cli, smtp_server):
    workspace.write_config(OTHER_JOBS_OFF + smtp_server.config(failed_alert_window="1h", interval="1d"))
    add_emails(engine, 2)
    assert _at(cli, workspace, NOW, "check").exit_code == 0
    smtp_server.script(NO_SUCH_USER)
    assert run_job(cli, workspace)[0] == 0, "a run whose emails fail still succeeds"
    alarm = _at(cli, workspace, NOW + timedelta(minutes=5), "check")
    assert alarm.exit_code == 1
    assert alarm.stdout.startswith("FAILED-EMAILS email-queue: 1 email(s) failed for good in the last 1h")
    assert NO_SUCH_USER in alarm.stdout
    as_json = json.loads(_at(cli, workspace, NOW + timedelta(minutes=5), "check", "--json").stdout)
    assert as_json["ok"] is False and as_json["failed_emails"]["count"] == 1
    assert as_json["failed_emails"]["newest_error"] == NO_SUCH_USER
    assert _at(cli, workspace, NOW + timedelta(minutes=61), "check").exit_code == 0, "outside the window"


def test_alert_on_failed_false_turns_the_alarm_off(workspace, engine, cli, smtp_server):
    workspace.write_config(OTHER_JOBS_OFF + smtp_server.config(alert_on_failed=False, interval="1d"))
    add_emails(engine, 1)
    smtp_server.script(NO_SUCH_USER)
    assert run_job(cli, workspace)[0] == 0
    assert queue_rows(engine)[0]["status"] == "failed"
    result = _at(cli, workspace, NOW + timedelta(minutes=1), "check", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["failed_emails"] is None


def test_emails_list_shows_failed_emails_without_their_bodies(workspace, engine, cli, smtp_server):
    workspace.write_config(smtp_server.config())
    add_emails(engine, 3)
    smtp_server.script(NO_SUCH_USER)
    assert run_job(cli, workspace)[0] == 0
    failed = json.loads(cli(workspace, "emails", "list", "--status", "failed", "--json").stdout)["emails"]
    assert [(e["to_address"], e["status"], e["attempts"], e["last_error"]) for e in failed] == [
        ("user0@example.org", "failed", 1, NO_SUCH_USER)]
    assert failed[0]["last_attempt_at"].startswith("2026-06-01T12:00:00")
    assert "body" not in failed[0]
    every = json.loads(cli(workspace, "emails", "list", "--json").stdout)["emails"]
    assert [e["status"] for e in every] == ["sent", "sent", "failed"]
    assert cli(workspace, "emails", "list", "--status", "lost").exit_code == 2


def test_emails_retry_sends_a_failed_email_again_and_clears_the_alarm(workspace, engine, cli, smtp_server):
    workspace.write_config(OTHER_JOBS_OFF + smtp_server.config(interval="1d"))
    first, second = add_emails(engine, 2)
    smtp_server.script(NO_SUCH_USER, NO_SUCH_USER)
    assert run_job(cli, workspace)[1]["counts"]["failed"] == 2
    refused = cli(workspace, "emails", "retry", str(first + 100))
    assert refused.exit_code == 2 and f"no email {first + 100}" in refused.stderr
    retried = _at(cli, workspace, NOW + timedelta(minutes=1), "emails", "retry", str(first))
    assert retried.exit_code == 0, retried.stderr
    rows = {r["id"]: r for r in queue_rows(engine)}
    assert (rows[first]["status"], rows[first]["attempts"]) == ("pending", 0)
    assert rows[second]["status"] == "failed"
    assert cli(workspace, "emails", "retry", str(first)).exit_code == 2, "only a failed email is sent again"
    assert cli(workspace, "emails", "retry", "--all-failed").exit_code == 0
    assert run_job(cli, workspace, NOW + timedelta(minutes=2))[1]["counts"]["sent"] == 2
    assert [r["status"] for r in queue_rows(engine)] == ["sent", "sent"]
    assert len(smtp_server.received) == 2
    assert _at(cli, workspace, NOW + timedelta(minutes=3), "check").exit_code == 0


@pytest.mark.backend_neutral
def test_emails_retry_needs_an_id_or_all_failed(workspace, cli):
    assert cli(workspace, "emails", "retry").exit_code == 2
    assert cli(workspace, "emails", "retry", "1", "--all-failed").exit_code == 2


def test_emails_on_a_database_without_the_table_is_a_configuration_error(workspace, cli):
    workspace.write_config('[jobs.email-queue]\ntable = "no_such_outbox"\n')
    result = cli(workspace, "emails", "list")
    assert result.exit_code == 78
    assert "no table 'no_such_outbox'" in result.stderr and "db upgrade --app-tables" in result.stderr
