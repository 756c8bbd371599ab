"""email-queue against a real SMTP server (aiosmtpd on loopback) and the three databases.

Delivery and headers, per-row backoff, permanent failures, a server that is down, dropped
connections, reclaim after a SIGKILL, SIGTERM mid-batch, concurrent claimers, secrets, TLS, the
file transport and the dry run.
"""

from __future__ import annotations

import base64
import json
import signal
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy
from email.utils import parsedate_to_datetime

import pytest
import time_machine
from sqlalchemy import Column, Integer, MetaData, Table, Text, insert, select, text

from jobs.app_tables import default_metadata
from jobs.builtin.email_rows import Outcome, claim, queue_table, write_outcomes
from jobs.builtin.mail_transport import Rejected, Sender, compose
from jobs.models import UTCDateTime
from tests.builtin.conftest import free_port, server_tls_context

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
CREATED = NOW - timedelta(minutes=1)
emails = default_metadata().tables["email_queue"]


def add_emails(engine, n: int, created: datetime = CREATED, **columns) -> list[int]:
    rows = [{"to_address": f"user{i}@example.org", "subject": f"Hello {i}", "body": f"Body of mail {i}.\n",
             "status": "pending", "attempts": 0, "created_at": created, **columns} for i in range(n)]
    with engine.begin() as conn:
        conn.execute(insert(emails), rows)
        return list(conn.execute(select(emails.c.id).order_by(emails.c.id)).scalars())[-n:]


def queue_rows(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(emails).order_by(emails.c.id)).mappings()]


def run_job(cli, ws, at: datetime = NOW, *args: str, env: dict | None = None) -> tuple[int, dict]:
    with time_machine.travel(at, tick=False):
        result = cli(ws, "email-queue", "--force", "--json", *args, env=env)
    return result.exit_code, json.loads(result.stdout)


def text_of(message) -> str:
    """The decoded body with the wire's CRLF line ends read back as newlines."""
    return message.get_content().replace("\r\n", "\n")


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_batch_is_delivered_with_its_headers_and_a_second_run_sends_nothing(workspace, engine, cli, smtp_server):
    workspace.write_config(smtp_server.config())
    ids = add_emails(engine, 2)
    with engine.begin() as conn:
        conn.execute(insert(emails).values(to_address="Jürgen Groß <jurgen@bücher.example>",
                                           subject="Grüße, Jürgen — " + "long subject " * 10,
                                           body="Hallo Jürgen,\r\n\r\n.a line that starts with a dot\r\n" + "x" * 1200,
                                           status="pending", attempts=0, created_at=CREATED))
    ids.append(queue_rows(engine)[-1]["id"])

    code, report = run_job(cli, workspace)

    assert code == 0 and report["counts"] == {"sent": 3, "failed": 0, "retried": 0, "reclaimed": 0}
    assert len(smtp_server.received) == 3
    for row_id, received in zip(ids, smtp_server.received):
        msg = received.message
        assert received.mail_from == "noreply@shop.example"
        assert msg["From"] == "Shop <noreply@shop.example>"
        assert msg["Message-ID"] == f"<{row_id}.{CREATED:%Y%m%d%H%M%S%f}.email_queue@shop.example>"
        assert parsedate_to_datetime(msg["Date"]) == CREATED
    first, _, third = (r.message for r in smtp_server.received)
    assert smtp_server.received[0].rcpt_tos == ["user0@example.org"]
    assert first["To"] == "user0@example.org" and first["Subject"] == "Hello 0"
    assert text_of(first) == "Body of mail 0.\n"
    assert smtp_server.received[2].rcpt_tos == ["jurgen@xn--bcher-kva.example"]
    assert third["To"].addresses[0].display_name == "Jürgen Groß"
    assert third["Subject"] == "Grüße, Jürgen — " + "long subject " * 10
    assert text_of(third) == "Hallo Jürgen,\n\n.a line that starts with a dot\n" + "x" * 1200 + "\n"
    rows = queue_rows(engine)
    assert [(r["status"], r["attempts"], r["sent_at"]) for r in rows] == [("sent", 1, NOW)] * 3

    code, report = run_job(cli, workspace, NOW + timedelta(minutes=5))
    assert code == 0 and report["counts"]["sent"] == 0
    assert len(smtp_server.handler.offered) == 3


def test_a_run_sends_at_most_batch_size_emails(workspace, engine, cli, smtp_server):
    workspace.write_config(smtp_server.config(batch_size=120))
    add_emails(engine, 130)
    assert run_job(cli, workspace)[1]["counts"]["sent"] == 120
    assert run_job(cli, workspace, NOW, "--batch-size", "3")[1]["counts"]["sent"] == 3
    assert run_job(cli, workspace)[1]["counts"]["sent"] == 7
    assert len({r.message["Message-ID"] for r in smtp_server.received}) == 130
    assert {r["status"] for r in queue_rows(engine)} == {"sent"}


def test_a_451_keeps_the_row_pending_until_its_backoff_has_passed(workspace, engine, cli, smtp_server):
    workspace.write_config(smtp_server.config(retry_base="60s"))
    add_emails(engine, 1)
    smtp_server.script("451 4.7.1 greylisted, try later")

    code, report = run_job(cli, workspace)
    assert code == 0 and report["counts"]["retried"] == 1 and report["counts"]["sent"] == 0
    [row] = queue_rows(engine)
    assert (row["status"], row["attempts"], row["next_attempt_at"]) == ("pending", 1, NOW + timedelta(seconds=60))
    assert row["last_error"] == "451 4.7.1 greylisted, try later"

    code, report = run_job(cli, workspace, NOW + timedelta(seconds=59))
    assert report["counts"]["sent"] == 0 and len(smtp_server.handler.offered) == 1

    code, report = run_job(cli, workspace, NOW + timedelta(seconds=61))
    assert code == 0 and report["counts"]["sent"] == 1
    [row] = queue_rows(engine)
    assert (row["status"], row["attempts"], row["sent_at"]) == ("sent", 2, NOW + timedelta(seconds=61))
    assert len(smtp_server.received) == 1


def test_a_550_fails_the_row_at_once_with_the_reply(workspace, engine, cli, smtp_server):
    workspace.write_config(smtp_server.config())
    add_emails(engine, 2)
    smtp_server.script("550 5.1.1 <user0@example.org>: no such user")

    code, report = run_job(cli, workspace)

    assert code == 0 and report["counts"] == {"sent": 1, "failed": 1, "retried": 0, "reclaimed": 0}
    failed, sent = queue_rows(engine)
    assert (failed["status"], failed["attempts"], failed["sent_at"]) == ("failed", 1, None)
    assert failed["last_error"] == "550 5.1.1 <user0@example.org>: no such user"
    assert sent["status"] == "sent"
    assert run_job(cli, workspace, NOW + timedelta(days=1))[1]["counts"]["failed"] == 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_unusable_recipient_or_subject_cannot_inject_headers(workspace, engine, cli, smtp_server):
    workspace.write_config(smtp_server.config())
    add_emails(engine, 1, to_address="victim@example.org\r\nBcc: everyone@example.org")
    add_emails(engine, 1, subject="Hi\r\nBcc: everyone@example.org")
    code, report = run_job(cli, workspace)
    assert code == 0 and report["counts"]["failed"] == 1 and report["counts"]["sent"] == 1
    bad, good = queue_rows(engine)
    assert bad["status"] == "failed" and bad["last_error"].startswith("invalid recipient address")
    [received] = smtp_server.received
    assert received.rcpt_tos == ["user0@example.org"] and received.message["Bcc"] is None
    assert received.message["Subject"] == "Hi  Bcc: everyone@example.org"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_configured_table_is_used_and_a_row_that_cannot_be_composed_fails_alone(workspace, engine, cli,
                                                                                   smtp_server):
    custom = Table("outgoing_mail", MetaData(), Column("id", Integer, primary_key=True),
                   *(Column(name, Text) for name in ("to_address", "subject", "body", "status", "last_error",
                                                     "claimed_by")),
                   Column("attempts", Integer),
                   *(Column(name, UTCDateTime) for name in ("next_attempt_at", "claimed_at", "created_at", "sent_at")))
    custom.create(engine)
    with engine.begin() as conn:
        conn.execute(insert(custom), [
            {"to_address": "a@example.org", "subject": None, "body": None, "status": "pending", "attempts": 0,
             "created_at": CREATED},
            {"to_address": "b@example.org", "subject": "Hi", "body": "Hello", "status": "pending", "attempts": 0,
             "created_at": CREATED}])
    workspace.write_config(smtp_server.config(table="outgoing_mail"))

    code, report = run_job(cli, workspace)

    assert code == 0 and report["counts"]["failed"] == 1 and report["counts"]["sent"] == 1
    with engine.connect() as conn:
        poison, fine = conn.execute(select(custom).order_by(custom.c.id)).mappings().all()
    assert poison["status"] == "failed" and poison["last_error"].startswith("cannot compose the message")
    assert fine["status"] == "sent" and smtp_server.received[0].message["Message-ID"].endswith(
        ".outgoing_mail@shop.example>")


def test_a_server_that_is_down_fails_the_run_and_the_row_after_max_attempts(workspace, engine, cli):
    workspace.write_config(
        "[jobs.email-queue]\n"
        f'smtp_host = "127.0.0.1"\nsmtp_port = {free_port()}\nmax_attempts = 3\nretry_base = "60s"\n')
    add_emails(engine, 2)

    code, report = run_job(cli, workspace)
    assert code == 75 and report["status"] == "failed"
    assert "cannot reach SMTP server 127.0.0.1" in report["error"]
    assert report["counts"]["retried"] == 2
    assert {(r["status"], r["attempts"], r["next_attempt_at"]) for r in queue_rows(engine)} == {
        ("pending", 1, NOW + timedelta(seconds=60))}
    with time_machine.travel(NOW + timedelta(seconds=1), tick=False):
        check = cli(workspace, "check", "--json")
    assert check.exit_code == 1
    assert {j["job"]: j["state"] for j in json.loads(check.stdout)["jobs"]}["email-queue"] == "failing"

    assert run_job(cli, workspace, NOW + timedelta(seconds=60))[0] == 75
    assert {(r["status"], r["attempts"]) for r in queue_rows(engine)} == {("pending", 2)}
    code, report = run_job(cli, workspace, NOW + timedelta(seconds=180))
    assert code == 75 and report["counts"]["failed"] == 2
    rows = queue_rows(engine)
    assert {(r["status"], r["attempts"]) for r in rows} == {("failed", 3)}
    assert all(r["last_error"].startswith("gave up after 3 attempts: cannot reach SMTP server") for r in rows)


def test_a_failed_run_releases_the_rows_it_claimed_ahead_untouched(workspace, engine, cli):
    workspace.write_config(f'[jobs.email-queue]\nsmtp_host = "127.0.0.1"\nsmtp_port = {free_port()}\n'
                           'batch_size = 500\n')
    add_emails(engine, 110)
    code, report = run_job(cli, workspace)
    assert code == 75 and report["counts"]["retried"] == 100
    rows = queue_rows(engine)
    assert [(r["status"], r["attempts"]) for r in rows] == [("pending", 1)] * 100 + [("pending", 0)] * 10
    assert [r["next_attempt_at"] for r in rows[100:]] == [None] * 10


def test_a_connection_lost_mid_batch_is_reopened_and_the_message_resent(workspace, engine, cli, smtp_server):
    workspace.write_config(smtp_server.config())
    add_emails(engine, 6)
    smtp_server.script("250", "250", "drop")

    code, report = run_job(cli, workspace)

    assert code == 0 and report["counts"]["sent"] == 6
    assert [r.rcpt_tos[0] for r in smtp_server.received] == [f"user{i}@example.org" for i in range(6)]
    assert [(r["status"], r["attempts"]) for r in queue_rows(engine)] == [("sent", 1)] * 6


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_421_closing_the_connection_is_a_lost_connection_too(workspace, engine, cli, smtp_server):
    workspace.write_config(smtp_server.config())
    add_emails(engine, 6)
    smtp_server.script("250", "250", "421 4.7.0 too many messages on this connection")

    code, report = run_job(cli, workspace)

    assert code == 0 and report["counts"]["sent"] == 6
    assert [r.rcpt_tos[0] for r in smtp_server.received] == [f"user{i}@example.org" for i in range(6)]
    assert [(r["status"], r["attempts"]) for r in queue_rows(engine)] == [("sent", 1)] * 6


def test_a_connection_lost_again_after_the_reconnect_loses_no_row(workspace, engine, cli, smtp_server):
    workspace.write_config(smtp_server.config())
    add_emails(engine, 6)
    smtp_server.script("250", "250", "drop", "drop")

    code, report = run_job(cli, workspace)

    assert code == 75 and "lost the connection again" in report["error"]
    assert report["counts"] == {"sent": 2, "failed": 0, "retried": 4, "reclaimed": 0}
    rows = queue_rows(engine)
    assert [(r["status"], r["attempts"]) for r in rows] == [("sent", 1)] * 2 + [("pending", 1)] * 4
    sent_to = {r["to_address"] for r in rows if r["status"] == "sent"}
    assert sent_to == {m.rcpt_tos[0] for m in smtp_server.received}
    assert run_job(cli, workspace, NOW + timedelta(minutes=2))[1]["counts"]["sent"] == 4
    assert {r["status"] for r in queue_rows(engine)} == {"sent"}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_starttls_and_implicit_tls_deliver_when_the_certificate_is_trusted(
        workspace, engine, cli, start_smtp_server, certificate, monkeypatch, security):
    context = server_tls_context(certificate)
    server = start_smtp_server(**({"tls_context": context, "require_starttls": True} if security == "starttls"
                                  else {"ssl_context": context}))
    server.handler.password = "s3cret-over-tls"
    workspace.write_config(server.config(smtp_security=security, smtp_username="mailer"))
    add_emails(engine, 2)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    code, report = run_job(cli, workspace, NOW, env={"CRONWARDEN_SMTP_PASSWORD": "s3cret-over-tls"})
    assert code == 0 and report["counts"]["sent"] == 2
    assert len(server.received) == 2 and server.handler.logins == ["mailer"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_tls_that_cannot_be_verified_or_is_not_offered_fails_the_run_and_leaves_rows_untouched(
        workspace, engine, cli, start_smtp_server, certificate):
    untrusted = start_smtp_server(tls_context=server_tls_context(certificate), require_starttls=True)
    plain = start_smtp_server()
    add_emails(engine, 2)
    for server, error in ((untrusted, "certificate verify failed"), (plain, "STARTTLS extension not supported")):
        workspace.write_config(server.config(smtp_security="starttls"))
        code, report = run_job(cli, workspace)
        assert code == 1 and error in report["error"]
        assert [(r["status"], r["attempts"]) for r in queue_rows(engine)] == [("pending", 0)] * 2
        assert server.handler.offered == []


def _sending(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM email_queue WHERE status = 'sending'")).scalar()


@pytest.mark.slow
def test_rows_of_a_sigkilled_sender_are_reclaimed_after_the_visibility_timeout(workspace, engine, cli, smtp_server):
    workspace.write_config(smtp_server.config())
    created = datetime.now(timezone.utc) - timedelta(minutes=1)
    add_emails(engine, 5, created=created)
    smtp_server.script(default="stall")
    sender = workspace.popen("email-queue", "--force")
    try:
        assert wait_for(lambda: smtp_server.handler.offered and _sending(engine) == 5), sender.communicate(timeout=5)
        sender.send_signal(signal.SIGKILL)
        sender.wait(timeout=10)
    finally:
        if sender.poll() is None:
            sender.kill()
    stalled_id = smtp_server.handler.offered[0].message["Message-ID"]
    assert smtp_server.received == [] and _sending(engine) == 5
    smtp_server.script(default="250")

    soon = datetime.now(timezone.utc) + timedelta(minutes=9)
    code, report = run_job(cli, workspace, soon)
    assert code == 0 and report["counts"]["sent"] == 0 and _sending(engine) == 5

    code, report = run_job(cli, workspace, soon + timedelta(minutes=2))
    assert code == 0 and report["counts"]["reclaimed"] == 5 and report["counts"]["sent"] == 5
    assert {r["status"] for r in queue_rows(engine)} == {"sent"}
    assert smtp_server.received[0].message["Message-ID"] == stalled_id
    history = json.loads(cli(workspace, "history", "email-queue", "--json").stdout)["runs"]
    assert [r["status"] for r in history][-1] == "abandoned"


@pytest.mark.slow
def test_sigterm_mid_batch_records_what_was_sent_and_releases_the_rest(workspace, engine, smtp_server):
    workspace.write_config(smtp_server.config())
    add_emails(engine, 5, created=datetime.now(timezone.utc))
    smtp_server.script("250", "250", "stall")
    sender = workspace.popen("email-queue", "--force")
    try:
        assert wait_for(lambda: len(smtp_server.handler.offered) == 3), sender.communicate(timeout=5)
        sender.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        smtp_server.handler.release.set()
        sender.wait(timeout=30)
    finally:
        if sender.poll() is None:
            sender.kill()
    assert sender.returncode == 143
    rows = queue_rows(engine)
    assert [(r["status"], r["attempts"]) for r in rows] == [("sent", 1)] * 2 + [("pending", 1)] + [("pending", 0)] * 2
    assert rows[2]["last_error"] == "451 4.3.0 stalled"


@pytest.mark.parametrize("db_url", ["postgres", "mariadb"], indirect=True)
def test_concurrent_claimers_never_take_the_same_row(engine):
    ids = set(add_emails(engine, 400))
    q = queue_table("email_queue")
    dialect = "postgresql" if engine.dialect.name == "postgresql" else "mysql"
    taken: dict[str, list[int]] = {"a": [], "b": []}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def claimer(name: str) -> None:
        try:
            claim_and_send(name)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    def claim_and_send(name: str) -> None:
        start.wait()
        deadline = time.monotonic() + 30
        while True:
            now = datetime.now(timezone.utc)
            with engine.begin() as conn:
                held = claim(conn, q, dialect, by=f"host:{name}", now=now, limit=20,
                             stale_before=now - timedelta(minutes=10))
                time.sleep(0.005)
            if not held.rows:
                # SKIP LOCKED also skips rows a session the server is still ending holds: look again
                # until every row is taken, so the test is about disjoint claims, not about timing
                if len(taken["a"]) + len(taken["b"]) >= len(ids) or time.monotonic() > deadline:
                    return
                time.sleep(0.05)
                continue
            taken[name] += [row.id for row in held.rows]
            with engine.begin() as conn:
                write_outcomes(conn, q, [Outcome(row.id, held.by, held.at, "sent", 1, None, None, now)
                                         for row in held.rows])

    threads = [threading.Thread(target=claimer, args=(name,)) for name in taken]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    a, b = taken["a"], taken["b"]
    assert errors == [] and a and b
    assert len(a) + len(b) == len(set(a) | set(b)) == len(ids)
    assert set(a) | set(b) == ids
    assert {r["status"] for r in queue_rows(engine)} == {"sent"}
    by_claimer = {r["claimed_by"] for r in queue_rows(engine)}
    assert by_claimer == {"host:a", "host:b"}


def test_a_recorder_that_cannot_write_stops_the_sender_and_keeps_every_outcome(sqlite_url):
    from jobs.config import RetryPolicy
    from jobs.context import JobContext
    from jobs.db import make_engine
    from jobs.execution import job_logger
    from jobs.signals import StopFlag

    engine = make_engine(sqlite_url)
    ctx = JobContext(job="email-queue", run_id=None, now=NOW, engine=engine, log=job_logger("email-queue", None),
                     retry=RetryPolicy(), stop=StopFlag(), held=None)
    recorder = ctx.recorder(write_outcomes, queue_table("no_such_table"), window=0.01, max_items=1000)
    outcomes = [Outcome(i, "host:1", NOW, "sent", 1, None, None, NOW) for i in range(3)]
    recorder.put([outcomes[0]])
    assert wait_for(lambda: recorder.error is not None, timeout=10)
    with pytest.raises(type(recorder.error)):
        recorder.check()
    recorder.put([outcomes[1]])
    recorder.put([outcomes[2]])
    with pytest.raises(type(recorder.error)):
        recorder.close()
    assert recorder.unwritten == outcomes
    engine.dispose()


def _leaks(text: str, password: str, username: str) -> bool:
    forms = [password, base64.b64encode(password.encode()).decode(),
             base64.b64encode(f"\0{username}\0{password}".encode()).decode().rstrip("=")]
    return any(form in text for form in forms)


def test_the_smtp_password_appears_nowhere_even_when_the_login_fails(workspace, engine, cli, smtp_server):
    password = f"pw-{uuid.uuid4().hex}"
    workspace.write_config(smtp_server.config(smtp_username="mailer"))
    env = {"CRONWARDEN_SMTP_PASSWORD": password}
    add_emails(engine, 2)
    seen = []

    smtp_server.handler.password = "something-else"
    with time_machine.travel(NOW, tick=False):
        refused = cli(workspace, "--verbose", "email-queue", "--force", env=env)
    assert refused.exit_code == 1
    assert "refused the login of 'mailer'" in refused.stderr
    assert {(r["status"], r["attempts"]) for r in queue_rows(engine)} == {("pending", 0)}
    seen += [refused.stdout, refused.stderr]

    smtp_server.handler.password = password
    with time_machine.travel(NOW + timedelta(minutes=1), tick=False):
        accepted = cli(workspace, "--verbose", "email-queue", "--force", "--json", env=env)
    assert accepted.exit_code == 0 and json.loads(accepted.stdout)["counts"]["sent"] == 2
    seen += [accepted.stdout, accepted.stderr]
    for command in (("history", "email-queue", "--json"), ("status", "--json"), ("check", "--json")):
        result = cli(workspace, *command, env=env)
        seen += [result.stdout, result.stderr]
    with engine.connect() as conn:
        for table in ("job_runs", "recurring_job_executions", "email_queue"):
            seen += [repr(row) for row in conn.execute(text(f"SELECT * FROM {table}"))]
    assert smtp_server.handler.logins and len(smtp_server.received) == 2
    assert not any(_leaks(chunk, password, "mailer") for chunk in seen)


def test_the_smtp_password_cannot_come_from_the_config_file(sqlite_workspace, cli):
    sqlite_workspace.write_config('[jobs.email-queue]\nsmtp_password = "hunter2-in-toml"\n')
    result = cli(sqlite_workspace, "email-queue", "--force")
    assert result.exit_code == 78
    assert "CRONWARDEN_SMTP_PASSWORD" in result.stderr and "hunter2-in-toml" not in result.stderr + result.stdout


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_file_transport_writes_one_eml_per_message_and_a_second_run_writes_nothing(
        workspace, engine, cli, tmp_path):
    outbox = tmp_path / "outbox"
    workspace.write_config(f'[jobs.email-queue]\ntransport = "file"\nfile_directory = "{outbox}"\n')
    ids = add_emails(engine, 3)

    code, report = run_job(cli, workspace)

    assert code == 0 and report["counts"]["sent"] == 3
    files = sorted(outbox.iterdir())
    assert [f.name for f in files] == [f"{i:010d}.eml" for i in ids]
    first = message_from_bytes(files[0].read_bytes(), policy=policy.default)
    assert first["To"] == "user0@example.org" and first["Message-ID"].startswith(f"<{ids[0]}.")
    before = {f.name: f.stat().st_mtime_ns for f in files}

    assert run_job(cli, workspace, NOW + timedelta(minutes=1))[1]["counts"]["sent"] == 0
    assert {f.name: f.stat().st_mtime_ns for f in outbox.iterdir()} == before


def test_dry_run_counts_what_would_be_sent_and_sends_nothing(workspace, engine, cli, smtp_server):
    workspace.write_config(smtp_server.config(batch_size=4))
    add_emails(engine, 5)
    add_emails(engine, 1, status="pending", next_attempt_at=NOW + timedelta(hours=1))
    add_emails(engine, 2, status="sending", claimed_by="dead:1", claimed_at=NOW - timedelta(hours=1))
    before = queue_rows(engine)

    code, report = run_job(cli, workspace, NOW, "--dry-run")

    assert code == 0 and report["status"] == "dry_run"
    assert report["counts"] == {"sent": 4, "failed": 0, "retried": 0, "reclaimed": 2}
    assert report["details"] == ["would send 4 of 7 due emails via smtp (2 reclaimed from a dead sender)"]
    assert queue_rows(engine) == before and smtp_server.handler.offered == []


def test_compose_folds_long_lines_encodes_what_is_not_ascii_and_refuses_two_recipients():
    sender = Sender.parse("Café Shop <shop@cafe.example>")
    message = compose(name="1", sender=sender, to_address="a@b.example", subject="x" * 950,
                      body="ü" * 2000, message_id="<1@cafe.example>", date=NOW)
    assert all(len(line) <= 998 for line in message.data.split(b"\r\n"))
    assert message.data.isascii() and b"\n" not in message.data.replace(b"\r\n", b"")
    for two in ("a@b.example, c@d.example", "A <a@b.example>, C <c@d.example>"):
        with pytest.raises(Rejected):
            compose(name="2", sender=sender, to_address=two, subject="", body="", message_id="<2@cafe.example>",
                    date=NOW)


def test_a_username_without_a_password_is_a_configuration_error(sqlite_workspace, cli):
    sqlite_workspace.write_config('[jobs.email-queue]\nsmtp_username = "mailer"\n')
    result = cli(sqlite_workspace, "email-queue", "--force")
    assert result.exit_code == 78
    assert "[jobs.email-queue] smtp_username: set, but CRONWARDEN_SMTP_PASSWORD" in result.stderr
