"""`db upgrade` brings a database of every earlier version to this one, step by step and keyed by the stored
version; nothing else changes the schema, except the embedded default database's first use."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from sqlalchemy import Column, Index, MetaData, String, Table, cast, inspect, select
from sqlalchemy.exc import DBAPIError

from jobs.models import SCHEMA_VERSION, executions, leases, runs, schema_version, slots
from jobs.queue.models import queued_jobs
from jobs.registry import builtin_extensions
from tests.conftest import Workspace
from tests.test_setup_errors import bare, one_line, tables

T = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
TOOL_TABLES = (schema_version, executions, runs, leases, slots) + tuple(
    t for ext in builtin_extensions() for t in ext.tables)


def old_schema(url: str, version: int) -> None:
    """The tool's tables as cronwarden of `version` created them, with a tracked job and one run.

    1: tracking, history, leases, version; 2: + queued_jobs; 3: + recurring_job_executions.first_seen_at;
    4: + job_slots; 5: + recurring_job_executions.missed_slots, owed_run_at, last_failure_at, last_failure_error.
    """
    from jobs.db import make_engine

    md = MetaData()
    for table in (schema_version, runs, leases) + ((queued_jobs,) if version >= 2 else ()) + \
            ((slots,) if version >= 4 else ()):
        table.to_metadata(md)
    added = {"first_seen_at": 3, "missed_slots": 5, "owed_run_at": 5, "last_failure_at": 5, "last_failure_error": 5}
    kept = [c for c in executions.columns if version >= added.get(c.name, 0)]
    Table(executions.name, md, *(c._copy() for c in kept))
    eng = make_engine(url)
    with eng.begin() as conn:
        md.create_all(conn)
        conn.execute(md.tables[schema_version.name].insert().values(id=1, version=version))
        conn.execute(md.tables[executions.name].insert().values(
            job_name="refresh-token-cleanup", last_status="failed", consecutive_failures=2, paused=False))
        conn.execute(md.tables[runs.name].insert().values(
            job_name="refresh-token-cleanup", status="failed", trigger="scheduled", host="h", pid=7, items=0,
            started_at=T))
    eng.dispose()


def shape(url: str) -> dict[str, tuple[set[str], set[str]]]:
    """Each tool table's columns and index names."""
    from jobs.db import make_engine

    eng = make_engine(url)
    try:
        with eng.connect() as conn:
            found = inspect(conn)
            present = set(found.get_table_names())
            return {t.name: ({c["name"] for c in found.get_columns(t.name)},
                             {i["name"] for i in found.get_indexes(t.name)}) for t in TOOL_TABLES if t.name in present}
    finally:
        eng.dispose()


def stored(url: str) -> int:
    from jobs.db import make_engine

    eng = make_engine(url)
    try:
        with eng.connect() as conn:
            return conn.execute(select(schema_version.c.version)).scalar_one()
    finally:
        eng.dispose()


def model_shape() -> dict[str, tuple[set[str], set[str]]]:
    return {t.name: ({c.name for c in t.columns}, {i.name for i in t.indexes}) for t in TOOL_TABLES}


@pytest.mark.parametrize("version", [0, 1, 2, 3, 4, 5])
def test_db_upgrade_brings_every_earlier_version_to_this_one_and_then_does_nothing(tmp_path, cli, db_url, version):
    if version:
        old_schema(db_url, version)
    ws = Workspace(tmp_path, db_url)
    ws.write_config("")
    result = cli(ws, "db", "upgrade")
    assert result.exit_code == 0, result.stderr
    assert shape(db_url) == model_shape()
    assert tables(db_url) == {t.name for t in TOOL_TABLES}  # the application's tables only with --app-tables
    assert stored(db_url) == SCHEMA_VERSION
    if version in (1, 2):
        assert f"schema version {version} -> {SCHEMA_VERSION}" in result.stdout
        assert "added column recurring_job_executions.first_seen_at" in result.stdout
        assert ("created table queued_jobs" in result.stdout) == (version == 1)
    if version in (1, 2, 3):
        assert "created table job_slots" in result.stdout
    if version:
        status = {j["name"]: j for j in json.loads(cli(ws, "status", "--json").stdout)["jobs"]}
        assert status["refresh-token-cleanup"]["consecutive_failures"] == 2
        assert [r["host"] for r in json.loads(cli(ws, "history", "--json").stdout)["runs"]] == ["h"]
    again = cli(ws, "db", "upgrade")
    assert again.exit_code == 0 and again.stdout.splitlines() == [result.stdout.splitlines()[-1]]
    assert shape(db_url) == model_shape() and stored(db_url) == SCHEMA_VERSION


def test_tool_tables_without_their_version_row_are_completed_and_stamped(tmp_path, cli, db_url):
    """Tables made by hand (or a MariaDB upgrade stopped before its first stamp) count as version 0: every step
    runs, and each finds what is already there."""
    old_schema(db_url, 2)
    from jobs.db import make_engine

    eng = make_engine(db_url)
    with eng.begin() as conn:
        conn.execute(schema_version.delete())
    eng.dispose()
    ws = Workspace(tmp_path, db_url)
    ws.write_config("")
    result = cli(ws, "db", "upgrade")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[:-1] == ["added column recurring_job_executions.first_seen_at",
                                               "created table job_slots",
                                               "added column recurring_job_executions.missed_slots (NOT NULL)",
                                               "added column recurring_job_executions.owed_run_at",
                                               "added column recurring_job_executions.last_failure_at",
                                               "added column recurring_job_executions.last_failure_error"]
    assert shape(db_url) == model_shape() and stored(db_url) == SCHEMA_VERSION


def test_a_database_of_a_newer_cronwarden_is_refused_by_every_command_and_left_alone(tmp_path, cli, engine, db_url):
    with engine.begin() as conn:
        conn.execute(schema_version.update().values(version=SCHEMA_VERSION + 1))
    before = shape(db_url)
    ws = Workspace(tmp_path, db_url)
    ws.write_config("")
    for command in (("check",), ("refresh-token-cleanup", "--force"), ("db", "upgrade"), ("queue", "list")):
        result = cli(ws, *command)
        assert result.exit_code == 78, command
        assert (f"holds the tables of a newer cronwarden (schema version {SCHEMA_VERSION + 1}; this one knows "
                f"{SCHEMA_VERSION})") in one_line(result)
    assert shape(db_url) == before and stored(db_url) == SCHEMA_VERSION + 1


@pytest.mark.parametrize("command", [("refresh-token-cleanup",), ("pause", "log-cleanup"),
                                     ("enqueue", "erase-user", "--arg", "user_id=1")], ids=" ".join)
def test_a_command_that_writes_creates_no_table_outside_the_embedded_default(tmp_path, cli, db_url, command):
    from jobs.db import make_engine

    make_engine(db_url).dispose()
    ws = Workspace(tmp_path, db_url)
    ws.write_config("")
    result = cli(ws, *command)
    assert result.exit_code == 78
    assert "has no cronwarden tables (run `cronwarden db upgrade`" in one_line(result)
    assert tables(db_url) == set()


@pytest.mark.parametrize("command", [("refresh-token-cleanup",), ("pause", "log-cleanup"), ("work",)], ids=" ".join)
def test_a_command_that_writes_creates_no_sqlite_file_but_the_embedded_default(tmp_path, cli, command):
    url = f"sqlite:///{tmp_path / 'var' / 'cronwarden.db'}"
    ws = Workspace(tmp_path, url)
    ws.write_config("")
    result = cli(ws, *command)
    assert result.exit_code == 78
    assert one_line(result).endswith(f"database {url} does not exist: run `cronwarden db upgrade` to create it, or "
                                     f"set CRONWARDEN_DATABASE_URL to the right database")
    assert not (tmp_path / "var").exists()
    assert cli(ws, "db", "upgrade", "--app-tables").exit_code == 0
    assert cli(ws, *command).exit_code == 0


def test_the_embedded_default_database_is_brought_up_to_date_by_its_first_writing_command(tmp_path, cli):
    ws = bare(tmp_path)
    url = f"sqlite:///{ws.path / 'cronwarden.db'}"
    old_schema(url, 2)
    refused = cli(ws, "check")  # a read never changes the schema, even here
    assert refused.exit_code == 78 and "older cronwarden" in one_line(refused)
    assert stored(url) == 2
    (tmp_path / "cronwarden.toml").write_text('[jobs.log-cleanup]\ntable = ""\n')
    result = cli(ws, "log-cleanup", "--force")
    assert result.exit_code == 0, result.stderr
    assert stored(url) == SCHEMA_VERSION and shape(url) == model_shape()


def test_a_migration_adds_an_index_and_a_not_null_column_filled_from_the_rows(engine):
    """The machinery a later version's steps use, on tables with rows: both changes keep every row and index."""
    from jobs import ddl, migrations
    from jobs.extensions import Migration

    later = runs.to_metadata(MetaData())
    Index("ix_job_runs_status", later.c.status)
    later.append_column(Column("where_ran", String(300), nullable=False))
    with engine.begin() as conn:
        conn.execute(runs.insert(), [{"job_name": "a", "status": s, "trigger": "manual", "host": "web-1", "pid": n,
                                      "started_at": T, "items": 0}
                                     for n, s in enumerate(("succeeded", "failed", "succeeded"))])
    steps = [Migration(SCHEMA_VERSION + 1, lambda conn: ddl.add_index(conn, later, "ix_job_runs_status")),
             Migration(SCHEMA_VERSION + 2, lambda conn: ddl.add_column(
                 conn, later, "where_ran", backfill=later.c.host + ":" + cast(later.c.pid, String)))]
    changes = migrations.upgrade(engine, extra=steps)
    assert changes == ["created index ix_job_runs_status on job_runs", "added column job_runs.where_ran (NOT NULL)",
                       f"schema version {SCHEMA_VERSION} -> {SCHEMA_VERSION + 2}"]
    assert migrations.upgrade(engine, extra=steps) == []
    with engine.connect() as conn:
        found = inspect(conn)
        assert {i["name"] for i in found.get_indexes("job_runs")} == {
            "ix_job_runs_job_started", "ix_job_runs_started", "ix_job_runs_status"}
        assert not {c["name"]: c for c in found.get_columns("job_runs")}["where_ran"]["nullable"]
        assert conn.execute(select(later.c.where_ran).order_by(later.c.id)).scalars().all() == [
            "web-1:0", "web-1:1", "web-1:2"]
        assert conn.execute(select(schema_version.c.version)).scalar_one() == SCHEMA_VERSION + 2
    with pytest.raises(DBAPIError), engine.begin() as conn:
        conn.execute(runs.insert().values(job_name="b", status="running", trigger="manual", host="h", pid=1,
                                          started_at=T, items=0))


def test_the_steps_are_numbered_one_to_the_version_this_cronwarden_knows():
    from jobs.migrations import steps

    assert [m.version for m in steps()] == list(range(1, SCHEMA_VERSION + 1))


def test_two_upgrades_at_once_both_succeed_and_the_second_finds_nothing_to_do(tmp_path, db_url):
    old_schema(db_url, 1)
    ws = Workspace(tmp_path, db_url)
    ws.write_config("")
    both = [ws.popen("db", "upgrade") for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in both]
    assert [p.returncode for p in both] == [0, 0], [err for _, err in outputs]
    assert sorted("created table queued_jobs" in out for out, _ in outputs) == [False, True]
    assert shape(db_url) == model_shape() and stored(db_url) == SCHEMA_VERSION
