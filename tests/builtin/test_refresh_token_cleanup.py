"""refresh-token-cleanup: exactly the tokens past the cutoff go, in batches; twice changes nothing; dry run."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import time_machine
from sqlalchemy import select, text

from tests.app_data import add_tokens, count_tokens, tokens

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)


def _run(cli, ws, *args: str) -> dict:
    with time_machine.travel(NOW, tick=False):
        result = cli(ws, "refresh-token-cleanup", "--force", "--json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_deletes_exactly_the_tokens_expired_before_the_cutoff(workspace, engine, cli):
    cutoff = NOW - timedelta(days=7)
    rows = {"just-past": cutoff - timedelta(microseconds=1), "at-cutoff": cutoff,
            "just-inside": cutoff + timedelta(seconds=1), "long-gone": NOW - timedelta(days=400),
            "future": NOW + timedelta(days=30)}
    with engine.begin() as conn:
        for name, expires in rows.items():
            conn.execute(tokens.insert().values(user_id=1, token_hash=name, expires_at=expires, created_at=NOW))
    report = _run(cli, workspace)
    with engine.connect() as conn:
        left = set(conn.execute(select(tokens.c.token_hash)).scalars())
    assert left == {"at-cutoff", "just-inside", "future"}
    assert report["counts"] == {"deleted": 2}


def test_works_in_bounded_batches_and_a_second_run_deletes_nothing(workspace, engine, cli):
    add_tokens(engine, NOW, expired=250, fresh=40)
    report = _run(cli, workspace, "--batch-size", "100")
    assert report["counts"] == {"deleted": 250}
    assert report["transactions"] == 3
    assert count_tokens(engine, "old") == 0 and count_tokens(engine, "new") == 40
    assert _run(cli, workspace)["counts"] == {"deleted": 0}
    assert count_tokens(engine, "new") == 40


def test_retention_days_option_moves_the_cutoff(workspace, engine, cli):
    add_tokens(engine, NOW, expired=10, fresh=10, retention_days=7)
    assert _run(cli, workspace, "--retention-days", "30")["counts"] == {"deleted": 0}
    assert _run(cli, workspace, "--retention-days", "1")["counts"] == {"deleted": 20}


def test_dry_run_reports_the_same_count_and_changes_nothing(workspace, engine, cli):
    add_tokens(engine, NOW, expired=37, fresh=5)
    report = _run(cli, workspace, "--dry-run")
    assert report["status"] == "dry_run" and report["counts"] == {"deleted": 37}
    assert count_tokens(engine, "old") == 37
    assert _run(cli, workspace)["counts"] == {"deleted": 37}


def test_table_and_column_names_are_configurable(workspace, engine, cli):
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE app_sessions (id INTEGER PRIMARY KEY, valid_until TIMESTAMP NULL)"))
        conn.execute(text("INSERT INTO app_sessions (id, valid_until) VALUES (1, :old), (2, :new)"),
                     {"old": datetime(2026, 1, 1), "new": datetime(2026, 5, 31)})
    workspace.write_config('[jobs.refresh-token-cleanup]\ntable = "app_sessions"\nexpires_column = "valid_until"\n')
    assert _run(cli, workspace)["counts"] == {"deleted": 1}
    with engine.connect() as conn:
        assert list(conn.execute(text("SELECT id FROM app_sessions")).scalars()) == [2]
