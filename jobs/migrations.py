"""`db upgrade`: the tool's schema brought from the stored version to this cronwarden's, one numbered step at a
time. Imported by `db upgrade` (and by the embedded default database's first use), never by a tick.

Why a list of functions and not Alembic: the steps are few, each is a handful of statements through
jobs.ddl that must read the same on SQLite, PostgreSQL and MariaDB, the version lives in the tool's own
`cronwarden_schema` row that deployments already carry, and nothing new is installed or imported. Steps
are numbered across the core and its extensions (the queue's table is step 2), so one number says what a
database holds; the core knows the number it needs (models.SCHEMA_VERSION) without importing an extension.

A database without the tool's tables starts at version 0: step 1 creates the core's tables from today's
model, so a later step that finds its change already there does nothing. Each step is stamped as it
completes: on PostgreSQL and SQLite the whole upgrade is one transaction; on MariaDB, where DDL commits,
a step interrupted half-way runs again and skips what it finds done.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy import inspect, select

from . import ddl
from .extensions import Migration
from .models import SCHEMA_VERSION, executions, leases, runs, schema_version, slots

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

LOCK_NAME = "#schema-upgrade"  # never a job's name (jobs.locks keys): only one upgrade runs at a time


def _core(conn: Connection) -> list[str]:
    return ddl.create_tables(conn, schema_version, executions, runs, leases)


def _first_seen(conn: Connection) -> list[str]:
    return ddl.add_column(conn, executions, "first_seen_at")


def _slots(conn: Connection) -> list[str]:
    return ddl.create_tables(conn, slots)


def _policies(conn: Connection) -> list[str]:
    return [*ddl.add_column(conn, executions, "missed_slots", backfill=0),
            *(change for name in ("owed_run_at", "last_failure_at", "last_failure_error")
              for change in ddl.add_column(conn, executions, name))]


CORE = (
    Migration(1, _core),  # recurring_job_executions, job_runs, job_leases, cronwarden_schema
    Migration(3, _first_seen),  # recurring_job_executions.first_seen_at (a never-run job becomes overdue)
    Migration(4, _slots),  # job_slots: one claim per (job, slot), the database's fence against a second run
    Migration(5, _policies),  # missed slots (catch_up), a buffered run (overlap), the last failure (history)
)


def steps(extra: Iterable[Migration] = ()) -> list[Migration]:
    """The core's steps and the registered extensions' (jobs.registry loads the built-in ones), in order."""
    from .registry import builtin_extensions

    found = [*CORE, *(m for ext in builtin_extensions() for m in ext.migrations), *extra]
    return sorted(found, key=lambda m: m.version)


def upgrade(engine: Engine, *, extra: Iterable[Migration] = ()) -> list[str]:
    """Run the steps after the stored version, up to this cronwarden's; returns what changed. Idempotent.

    extra: further steps (numbered after SCHEMA_VERSION), for a test of the machinery. A database of a
    newer cronwarden is refused (ConfigError) and left as it is.
    """
    todo = steps(extra)
    target = todo[-1].version
    if [m.version for m in todo] != list(range(1, target + 1)) or target < SCHEMA_VERSION:
        raise RuntimeError(f"schema steps are not numbered 1..{SCHEMA_VERSION}: {[m.version for m in todo]}")
    changes: list[str] = []
    with engine.begin() as conn, _one_at_a_time(conn):
        stored = stored_version(conn)
        if stored > target:
            from .schema import newer_problem

            raise newer_problem(engine, stored)
        for step in todo[stored:]:
            changes += step.apply(conn)
            _stamp(conn, step.version)
        if 0 < stored < target:
            changes.append(f"schema version {stored} -> {target}")
    return changes


def stored_version(conn: Connection) -> int:
    """The version the database holds: 0 without the tool's tables (or without its version row)."""
    if not inspect(conn).has_table(schema_version.name):
        return 0
    return conn.execute(select(schema_version.c.version).where(schema_version.c.id == 1)).scalar() or 0


def _stamp(conn: Connection, version: int) -> None:
    done = conn.execute(schema_version.update().where(schema_version.c.id == 1).values(version=version))
    if not done.rowcount:
        conn.execute(schema_version.insert().values(id=1, version=version))


@contextmanager
def _one_at_a_time(conn: Connection) -> Iterator[None]:
    """Two upgrades at once (two pods starting) run one after the other; the second finds nothing to do.

    SQLite: the writer's BEGIN IMMEDIATE already serialises them. PostgreSQL: an advisory lock held until
    the transaction ends. MariaDB: GET_LOCK, which a DDL statement's implicit commit does not release.
    """
    dialect = conn.dialect.name
    if dialect == "postgresql":
        from .locks.postgres import advisory_key

        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (advisory_key(LOCK_NAME),))
        yield
    elif dialect in ("mysql", "mariadb"):
        from .locks.mysql import lock_name

        name = lock_name(LOCK_NAME, conn.engine.url.database)
        if conn.exec_driver_sql("SELECT GET_LOCK(%s, 300)", (name,)).scalar() != 1:
            from .errors import DatabaseUnavailable

            raise DatabaseUnavailable("another `cronwarden db upgrade` held the schema for 300 s")
        try:
            yield
        finally:
            conn.exec_driver_sql("SELECT RELEASE_LOCK(%s)", (name,))
    else:
        yield
