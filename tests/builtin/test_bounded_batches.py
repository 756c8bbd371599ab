"""Every bulk job changes at most batch_size rows per transaction whatever the values: all rows equal,
one giant tie with a spread tail, NULLs, values in the future, one row, an empty table."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import time_machine
from sqlalchemy import Column, Index, Integer, MetaData, Table, func, insert, select

from jobs.app_tables import default_metadata
from jobs.models import UTCDateTime
from tests.layouts import RowsPerTransaction, fill, text_of

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)
BATCH = 50
APP = default_metadata()


@dataclass(frozen=True)
class Bulk:
    """A bulk job seen from the table it changes."""

    job: str
    table: str
    column: str
    retention_days: int
    counter: str
    others: dict[str, Any] = field(default_factory=dict)
    inclusive: bool = False  # the cutoff itself is due (ip-anonymization: at or before)

    @property
    def cutoff(self) -> datetime:
        return NOW - timedelta(days=self.retention_days)


JOBS = {
    "refresh-token-cleanup": Bulk("refresh-token-cleanup", "refresh_tokens", "expires_at", 7,
                                  "deleted", {"user_id": 1, "token_hash": "t", "created_at": NOW}),
    "log-cleanup": Bulk("log-cleanup", "logs", "created_at", 30, "rows_deleted",
                        {"level": "INFO", "message": "m"}),
    "ip-anonymization": Bulk("ip-anonymization", "users", "last_login_at", 90, "anonymized",
                             {"username": lambda group: text_of(f"g{group}-"), "email": "e@example.com", "password_hash": "x",
                              "is_admin": False, "created_at": NOW, "last_login_ip": "192.0.2.1"},
                             inclusive=True),
}


@dataclass(frozen=True)
class Tie:
    """n rows whose column is cutoff + offset (None: NULL)."""

    n: int
    offset: timedelta | None


@dataclass(frozen=True)
class Spread:
    """n rows one second apart from cutoff + offset on."""

    n: int
    offset: timedelta


LAYOUTS: dict[str, list[Any]] = {
    "tied": [Tie(1000, -DAY)],
    # Enough rows after the cutoff that SQLite and PostgreSQL take the expiry order, not a storage sweep.
    "tie-tail": [Spread(50, -3 * DAY), Tie(400, -2 * DAY), Spread(50, -DAY), Tie(30_000, DAY)],
    "nulls": [Tie(400, None), Tie(300, -DAY), Tie(100, DAY)],
    "future": [Tie(500, timedelta(days=400)), Tie(200, -DAY)],
    "one": [Tie(1, -DAY)],
    "empty": [],
}


def _table(bulk: Bulk, layout: list[Any]) -> Table:
    """The job's default table, or a copy whose column may be NULL when the layout has NULLs."""
    if not any(isinstance(g, Tie) and g.offset is None for g in layout) or APP.tables[bulk.table].c[bulk.column].nullable:
        return APP.tables[bulk.table]
    name = f"{bulk.table}_nullable"
    return Table(name, MetaData(), Column("id", Integer, primary_key=True, autoincrement=True),
                 Column(bulk.column, UTCDateTime, nullable=True), Index(f"ix_{name}", bulk.column))


def _load(engine, bulk: Bulk, table: Table, layout: list[Any]) -> int:
    """Insert the layout; returns how many rows the job must change."""
    table.create(engine, checkfirst=True)
    due = 0
    with engine.begin() as conn:
        for g, group in enumerate(layout):
            # Unique columns get a text unique to the group and row.
            others = {k: v(g) if callable(v) else v for k, v in bulk.others.items() if k in table.c}
            if isinstance(group, Tie):
                value = None if group.offset is None else bulk.cutoff + group.offset
                fill(conn, table, group.n, **others, **{bulk.column: value})
                due += group.n if value is not None and (value < bulk.cutoff) else 0
            else:
                start = bulk.cutoff + group.offset
                rows = [{**{k: f"g{g}-{i}" if callable(v) else v for k, v in others.items()},
                         bulk.column: start + timedelta(seconds=i)} for i in range(group.n)]
                conn.execute(insert(table), rows)
                due += sum(1 for r in rows if r[bulk.column] < bulk.cutoff)
    return due


def _left_due(engine, bulk: Bulk, table: Table) -> int:
    column = table.c[bulk.column]
    due = column <= bulk.cutoff if bulk.inclusive else column < bulk.cutoff
    if bulk.job == "ip-anonymization":
        due = due & table.c.last_login_ip.is_not(None)
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(due)).scalar()


def _run_bulk(cli, workspace, bulk: Bulk, table: Table) -> tuple[dict, RowsPerTransaction]:
    if table.name != bulk.table:
        workspace.write_config(f'[jobs.{bulk.job}]\ntable = "{table.name}"\n')
    with RowsPerTransaction(table.name) as watch, time_machine.travel(NOW, tick=False):
        result = cli(workspace, bulk.job, "--force", "--json", "--batch-size", str(BATCH))
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout), watch


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("job", JOBS)
def test_every_transaction_changes_at_most_batch_size_rows_whatever_the_values(workspace, engine, cli, job, layout):
    bulk = JOBS[job]
    table = _table(bulk, LAYOUTS[layout])
    due = _load(engine, bulk, table, LAYOUTS[layout])
    report, watch = _run_bulk(cli, workspace, bulk, table)
    assert report["status"] == "succeeded"
    assert report["counts"][bulk.counter] == due == sum(watch.committed)
    assert _left_due(engine, bulk, table) == 0
    assert watch.largest <= BATCH, f"a transaction changed {watch.largest} rows: {watch.committed[:10]}"
    assert report["largest_batch_items"] <= BATCH
    assert report["transactions"] >= -(-due // BATCH)



@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_postgres_batches_read_rows_in_proportion_to_the_batch_not_the_table(workspace, engine, cli):
    """Values scattered over the keys, none tied: each batch's boundary value is taken through the value's
    index, never by walking the key's index from its start (which read the table once per batch)."""
    from sqlalchemy import event, text
    from sqlalchemy.engine import Engine

    bulk = JOBS["log-cleanup"]
    n = 20_000
    rows = [{"level": "INFO", "message": "m",
             "created_at": bulk.cutoff - DAY - timedelta(seconds=(i * 7919) % n)} for i in range(n)]
    with engine.begin() as conn:
        conn.execute(insert(APP.tables["logs"]), rows)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE logs"))
    read: list[int] = []
    started: dict[int, int] = {}

    def rows_read(conn) -> int:
        cursor = conn.connection.dbapi_connection.cursor()
        cursor.execute("SELECT coalesce(sum(seq_tup_read + idx_tup_fetch), 0) FROM pg_stat_xact_user_tables "
                       "WHERE relname = 'logs'")
        return int(cursor.fetchone()[0])

    def begun(conn) -> None:
        started[id(conn)] = rows_read(conn)

    def committing(conn) -> None:
        read.append(rows_read(conn) - started.pop(id(conn), 0))

    event.listen(Engine, "begin", begun)
    event.listen(Engine, "commit", committing)
    try:
        report, _ = _run_bulk(cli, workspace, bulk, APP.tables["logs"])
    finally:
        event.remove(Engine, "begin", begun)
        event.remove(Engine, "commit", committing)
    assert report["counts"]["rows_deleted"] == n
    assert max(read) <= 10 * BATCH, f"a transaction read {max(read)} rows for a batch of {BATCH}"
