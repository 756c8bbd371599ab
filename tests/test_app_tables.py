"""The default application tables: an application queues an email with a plain INSERT (the defaults of
status, attempts and created_at live in the database, not only in Python)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from sqlalchemy import text


def test_an_application_queues_an_email_with_a_plain_insert(workspace, cli, engine):
    with engine.begin() as conn:  # the README's example, as an application runs it
        conn.execute(text("INSERT INTO email_queue (to_address, subject, body) VALUES (:to, :subject, :body)"),
                     {"to": "ada@example.com", "subject": "Welcome", "body": "Hello Ada"})
    with engine.connect() as conn:
        row = conn.execute(text("SELECT status, attempts, created_at FROM email_queue")).one()
    created = row.created_at if isinstance(row.created_at, datetime) else datetime.fromisoformat(row.created_at)
    assert (row.status, row.attempts) == ("pending", 0)
    assert abs(created.replace(tzinfo=timezone.utc) - datetime.now(timezone.utc)) < timedelta(minutes=1)
    workspace.write_config(f'[jobs.email-queue]\ntransport = "file"\nfile_directory = "{workspace.path / "outbox"}"\n')
    result = cli(workspace, "email-queue", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["counts"]["sent"] == 1
    [message] = (workspace.path / "outbox").glob("*.eml")
    assert "Subject: Welcome" in message.read_text()
