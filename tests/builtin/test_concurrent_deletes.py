"""Rows the application deletes while a bulk job runs never fail the run: whichever read finds them gone
(a boundary, a follow-up after a rolled-back window), the batch is smaller and the run succeeds."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import time_machine
from sqlalchemy import bindparam, case, func, select, text

from jobs.app_tables import default_metadata
from tests.layouts import Vanish, fill, text_of

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
APP = default_metadata()
tokens, logs, users = APP.tables["refresh_tokens"], APP.tables["logs"], APP.tables["users"]
TOKEN_CUTOFF = NOW - timedelta(days=7)


def _alternating(column, old: datetime, new: datetime):
    """For fill: row i gets `old` when i is even, `new` otherwise (due rows scattered over the table)."""
    return lambda i: case((i % 2 == 0, bindparam(None, old, type_=column.type)),
                          else_=bindparam(None, new, type_=column.type))


def _count(engine, table, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar()


def _run(cli, workspace, job: str, vanish: Vanish) -> dict:
    with vanish, time_machine.travel(NOW, tick=False):
        result = cli(workspace, job, "--force", "--json", "--batch-size", "50")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "succeeded", report["error"]
    return report


# few-expired: batches in expiry order, on every database; scattered: SQLite's rowid sweep, PostgreSQL's block
# sweep (whose follow-up read after a rolled-back window used to find nothing and crash). MariaDB batches in expiry
# order whatever the layout, so few-expired is its case.
LAYOUTS = [("sqlite", "few-expired"), ("postgres", "few-expired"), ("mariadb", "few-expired"),
           ("sqlite", "scattered"), ("postgres", "scattered")]


@pytest.mark.slow
@pytest.mark.parametrize("at", [1, 2, 3, 5])
@pytest.mark.parametrize(("db_url", "layout"), LAYOUTS, indirect=["db_url"])
def test_refresh_token_cleanup_survives_tokens_deleted_meanwhile(workspace, db_url, engine, cli, layout, at):
    old, new = TOKEN_CUTOFF - timedelta(days=1), TOKEN_CUTOFF + timedelta(days=1)
    with engine.begin() as conn:
        if layout == "scattered":
            fill(conn, tokens, 20_000, user_id=1, token_hash="t", created_at=NOW,
                 expires_at=_alternating(tokens.c.expires_at, old, new))
        else:
            fill(conn, tokens, 300, user_id=1, token_hash="t", created_at=NOW, expires_at=old)
            fill(conn, tokens, 30_000, user_id=1, token_hash="t", created_at=NOW, expires_at=new)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE refresh_tokens"))
    due, kept = _count(engine, tokens, tokens.c.expires_at < TOKEN_CUTOFF), _count(engine, tokens) - \
        _count(engine, tokens, tokens.c.expires_at < TOKEN_CUTOFF)
    vanish = Vanish(db_url, tokens, tokens.c.expires_at < TOKEN_CUTOFF, at)
    report = _run(cli, workspace, "refresh-token-cleanup", vanish)
    assert vanish.deleted > 0
    assert report["counts"]["deleted"] + vanish.deleted == due
    assert _count(engine, tokens, tokens.c.expires_at < TOKEN_CUTOFF) == 0
    assert _count(engine, tokens) == kept


@pytest.mark.parametrize("at", [1, 2, 3])
def test_log_cleanup_survives_rows_deleted_meanwhile(workspace, db_url, engine, cli, at):
    cutoff = NOW - timedelta(days=30)
    with engine.begin() as conn:
        fill(conn, logs, 500, level="INFO", message="burst", created_at=cutoff - timedelta(days=1))
        fill(conn, logs, 100, level="INFO", message="recent", created_at=cutoff + timedelta(days=1))
    vanish = Vanish(db_url, logs, logs.c.created_at < cutoff, at)
    report = _run(cli, workspace, "log-cleanup", vanish)
    assert vanish.deleted > 0
    assert report["counts"]["rows_deleted"] + vanish.deleted == 500
    assert _count(engine, logs) == 100


@pytest.mark.parametrize("at", [1, 2, 3])
def test_ip_anonymization_survives_users_deleted_meanwhile(workspace, db_url, engine, cli, at):
    cutoff = NOW - timedelta(days=90)
    due = (users.c.last_login_at <= cutoff) & users.c.last_login_ip.is_not(None)
    with engine.begin() as conn:
        fill(conn, users, 600, username=text_of("u"), email="e@example.com", password_hash="x", is_admin=False,
             created_at=NOW, last_login_ip="192.0.2.1",
             last_login_at=_alternating(users.c.last_login_at, cutoff - timedelta(days=1), NOW))
    vanish = Vanish(db_url, users, due, at)
    report = _run(cli, workspace, "ip-anonymization", vanish)
    assert vanish.deleted > 0
    assert report["counts"]["anonymized"] + vanish.deleted == 300
    assert _count(engine, users, due) == 0
    assert _count(engine, users, users.c.last_login_ip.is_not(None)) == 300
