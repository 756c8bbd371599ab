"""refresh-token-cleanup chooses the order it deletes in from the data; every order deletes exactly
the expired tokens, in transactions of at most batch_size rows."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import time_machine
from sqlalchemy import insert, select, text

from jobs.app_tables import ref
from jobs.builtin.refresh_token_cleanup import _choose_order
from tests.app_data import tokens

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
CUTOFF = NOW - timedelta(days=7)


def _load(engine, n: int, expired, *, in_order: bool) -> set[str]:
    """n tokens; token i is expired when expired(i). Returns the hashes that must survive.

    in_order: expiry times rise with the insertion order (rows stored in expiry order); otherwise the
    expiry times are scattered over the table by a multiplicative hash."""
    rows, keep = [], set()
    for i in range(n):
        rank = i if in_order else (i * 7919) % n
        gone = expired(rank)
        expires = CUTOFF - timedelta(seconds=n - rank) if gone else CUTOFF + timedelta(seconds=rank)
        rows.append({"user_id": 1, "token_hash": f"t{i}", "expires_at": expires, "created_at": NOW})
        if not gone:
            keep.add(f"t{i}")
    with engine.begin() as conn:
        for start in range(0, n, 5000):
            conn.execute(insert(tokens), rows[start:start + 5000])
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE refresh_tokens"))
    return keep


def _order(engine) -> str:
    keys = {"sqlite": ("rowid",), "postgresql": ("ctid",)}.get(engine.dialect.name, ())
    table = ref("refresh_tokens", times=("expires_at",), others=keys)
    with engine.connect() as conn:
        return _choose_order(conn, table, table.c.expires_at, CUTOFF).order


def _run_and_check(cli, workspace, engine, keep: set[str], batch_size: int) -> dict:
    with time_machine.travel(NOW, tick=False):
        result = cli(workspace, "refresh-token-cleanup", "--force", "--json", "--batch-size", str(batch_size))
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    with engine.connect() as conn:
        left = set(conn.execute(select(tokens.c.token_hash)).scalars())
    assert left == keep
    return report


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sqlite_sweeps_in_rowid_order_when_many_rows_are_expired(workspace, engine, cli):
    n = 6000
    keep = _load(engine, n, lambda rank: rank % 2 == 0, in_order=False)
    assert _order(engine) == "rowid"
    report = _run_and_check(cli, workspace, engine, keep, batch_size=700)
    assert report["counts"] == {"deleted": n // 2}
    assert report["transactions"] >= (n // 2) // 700


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sqlite_follows_the_expiry_index_when_few_rows_are_expired(workspace, engine, cli):
    n = 6000
    keep = _load(engine, n, lambda rank: rank % 600 == 0, in_order=False)
    assert _order(engine) == "expiry"
    report = _run_and_check(cli, workspace, engine, keep, batch_size=3)
    assert report["counts"] == {"deleted": 10}
    assert report["transactions"] >= 4


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_postgres_sweeps_block_windows_when_expired_rows_are_scattered(workspace, engine, cli):
    n = 20000
    keep = _load(engine, n, lambda rank: rank % 2 == 1, in_order=False)
    assert _order(engine) == "block"
    report = _run_and_check(cli, workspace, engine, keep, batch_size=900)
    assert report["counts"] == {"deleted": n // 2}
    assert report["transactions"] >= (n // 2) // 900


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_postgres_follows_the_expiry_index_when_rows_are_stored_in_expiry_order(workspace, engine, cli):
    n = 20000
    keep = _load(engine, n, lambda rank: rank < n // 2, in_order=True)
    assert _order(engine) == "expiry"
    report = _run_and_check(cli, workspace, engine, keep, batch_size=900)
    assert report["counts"] == {"deleted": n // 2}


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_postgres_sweeps_blocks_when_every_token_shares_one_expiry(workspace, engine, cli):
    """A single expiry value correlates trivially with storage order: that is no reason to follow the index."""
    n = 20000
    keep = _load(engine, n, lambda rank: True, in_order=False)
    with engine.begin() as conn:
        conn.execute(tokens.update().values(expires_at=CUTOFF - timedelta(days=1)))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE refresh_tokens"))
    assert _order(engine) == "block"
    report = _run_and_check(cli, workspace, engine, keep, batch_size=900)
    assert report["counts"] == {"deleted": n} and report["largest_batch_items"] <= 900
