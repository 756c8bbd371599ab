"""One database per server and test process, reused by every test instead of created and dropped per test.

A test that asks for a bare server URL (pg_url, mysql_url) gets the database empty, as a new one would be.
A test that asks for the `engine` gets the tool's and the default application tables with the rows a first
`upgrade` leaves: when the previous test left the same structure, its tables are only truncated, otherwise
the database is emptied and built again. Whatever a test left running on the database is ended first.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import MetaData, Table, create_engine, text
from sqlalchemy.engine import make_url

# The structure of the database, one row per object, in a stable order: two states with the same rows
# need the same DDL (tables, columns and their defaults, constraints, indexes, triggers, views, routines).
PG_STRUCTURE = """
SELECT 'schema ' || nspname FROM pg_namespace
 WHERE nspname NOT LIKE 'pg\\_%' AND nspname NOT IN ('information_schema', 'public')
UNION ALL
SELECT 'object ' || n.nspname || '.' || c.relname || ' ' || c.relkind::text || ' ' || coalesce((
         SELECT string_agg(a.attname || ':' || format_type(a.atttypid, a.atttypmod) || ':' || a.attnotnull::text
                           || ':' || coalesce(pg_get_expr(d.adbin, d.adrelid), ''), ',' ORDER BY a.attnum)
           FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
          WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
UNION ALL
SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
  FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL
SELECT 'trigger ' || tgrelid::regclass::text || ' ' || tgname FROM pg_trigger WHERE NOT tgisinternal
UNION ALL
SELECT 'routine ' || p.oid::regprocedure::text FROM pg_proc p
 WHERE p.pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
ORDER BY 1
"""

MYSQL_STRUCTURE = """
SELECT CONCAT('column ', TABLE_NAME, ' ', ORDINAL_POSITION, ' ', COLUMN_NAME, ' ', COLUMN_TYPE, ' ', IS_NULLABLE,
              ' ', COALESCE(COLUMN_DEFAULT, ''), ' ', EXTRA) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = :db
UNION ALL
SELECT CONCAT('index ', TABLE_NAME, ' ', INDEX_NAME, ' ', SEQ_IN_INDEX, ' ', COLUMN_NAME, ' ', NON_UNIQUE)
  FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = :db
UNION ALL
SELECT CONCAT('table ', TABLE_NAME, ' ', TABLE_TYPE, ' ', COALESCE(ENGINE, ''))
  FROM information_schema.TABLES WHERE TABLE_SCHEMA = :db
UNION ALL
SELECT CONCAT('constraint ', TABLE_NAME, ' ', CONSTRAINT_NAME, ' ', CONSTRAINT_TYPE)
  FROM information_schema.TABLE_CONSTRAINTS WHERE TABLE_SCHEMA = :db
UNION ALL
SELECT CONCAT('trigger ', TRIGGER_NAME) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = :db
UNION ALL
SELECT CONCAT('routine ', ROUTINE_NAME) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = :db
ORDER BY 1
"""


@dataclass
class Standard:
    """The state the `engine` fixture gives: its structure, tables, their first rows and counters."""

    structure: str
    tables: list[Table]
    rows: dict[str, list[tuple]]
    counters: dict[str, Any]


class ServerDatabase:
    """This test process's database on one server (PostgreSQL or MariaDB)."""

    def __init__(self, admin_url: str) -> None:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        self.name = f"cw_{worker}_{uuid.uuid4().hex[:8]}"
        self.admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        self.postgres = self.admin.dialect.name == "postgresql"
        self.url = make_url(admin_url).set(database=self.name).render_as_string(hide_password=False)
        self._standard: Standard | None = None
        with self.admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {self.name}"))
            if self.postgres:  # the tests' commits need not wait for the disk: nothing here survives a crash
                conn.execute(text(f"ALTER DATABASE {self.name} SET synchronous_commit = off"))
        self.own = create_engine(self.url, isolation_level="AUTOCOMMIT")

    def empty(self) -> None:
        """No table, view, routine or schema of its own: the state of a database just created."""
        self._end_other_sessions()
        if not self._structure():
            return
        if self.postgres:
            with self.own.connect() as conn:
                schemas = conn.execute(text("SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
                                            "AND nspname <> 'information_schema'")).scalars().all()
                for schema in schemas:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                conn.execute(text("CREATE SCHEMA public AUTHORIZATION pg_database_owner"))
                conn.execute(text("GRANT USAGE ON SCHEMA public TO PUBLIC"))
        else:
            self.own.dispose()
            with self.admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE {self.name}"))
                conn.execute(text(f"CREATE DATABASE {self.name}"))

    def standard(self, build: Callable[[str], None]) -> None:
        """The state `build(url)` makes of an empty database; when only rows or counters differ from it, the
        tables that changed are truncated and their first rows put back."""
        self._end_other_sessions()
        if self._standard is not None and self._structure() == self._standard.structure and not self._analyzed():
            self._restore(self._standard)
            return
        self.empty()
        build(self.url)
        with self.own.connect() as conn:
            tables = [Table(name, MetaData(), autoload_with=conn) for name in self._table_names(conn)]
            rows = {t.name: self._rows(conn, t) for t in tables}
            self._standard = Standard(self._structure(), tables, rows, self._counters(conn))

    def drop(self) -> None:
        self._end_other_sessions()
        self.own.dispose()
        with self.admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {self.name}" + (" WITH (FORCE)" if self.postgres else "")))
        self.admin.dispose()

    def _restore(self, standard: Standard) -> None:
        with self.own.connect() as conn:
            counters = self._counters(conn)
            changed = [t for t in standard.tables if self._rows(conn, t) != standard.rows[t.name]
                       or (not self.postgres and counters.get(t.name) != standard.counters.get(t.name))]
            if self.postgres and changed:
                conn.execute(text("TRUNCATE " + ", ".join(f'"{t.name}"' for t in changed) + " CASCADE"))
            if self.postgres:
                for sequence, value in self._counters(conn).items():
                    if value != standard.counters.get(sequence, value):
                        last, called = standard.counters[sequence]
                        conn.execute(text("SELECT setval(:s, :v, :c)"),
                                     {"s": f'"{sequence}"', "v": last or 1, "c": called})
            else:
                conn.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
                for table in changed:
                    conn.execute(text(f"TRUNCATE TABLE `{table.name}`"))
                conn.execute(text("SET FOREIGN_KEY_CHECKS = 1"))
            for table in standard.tables:
                if standard.rows[table.name] and self._rows(conn, table) != standard.rows[table.name]:
                    conn.execute(table.insert(), [dict(zip(table.columns.keys(), row))
                                                  for row in standard.rows[table.name]])

    def _analyzed(self) -> bool:
        """PostgreSQL: planner statistics (a test's ANALYZE, or autovacuum's after a big insert) outlive
        TRUNCATE and steer a job's choice of plan, so a database that has them is built again."""
        if not self.postgres:
            return False
        with self.own.connect() as conn:
            return bool(conn.execute(text(
                "SELECT EXISTS (SELECT 1 FROM pg_statistic s JOIN pg_class c ON c.oid = s.starelid "
                "WHERE c.relnamespace = 'public'::regnamespace)")).scalar())

    def _rows(self, conn, table: Table) -> list[tuple]:
        """Its rows when it has a few (the first state has only a handful), else a marker that it has many."""
        found = conn.execute(table.select().limit(20)).all()
        return sorted((tuple(r) for r in found), key=repr) if len(found) < 20 else [("many",)]

    def _counters(self, conn) -> dict[str, Any]:
        """PostgreSQL: each sequence's (last value, called); MariaDB: each table's next AUTO_INCREMENT."""
        if self.postgres:
            names = conn.execute(text("SELECT relname FROM pg_class WHERE relkind = 'S' "
                                      "AND relnamespace = 'public'::regnamespace")).scalars().all()
            if not names:
                return {}
            found = conn.execute(text(" UNION ALL ".join(
                f"SELECT '{name}', last_value, is_called FROM \"{name}\"" for name in names)))
            return {name: (last, called) for name, last, called in found}
        found = conn.execute(text("SELECT TABLE_NAME, AUTO_INCREMENT FROM information_schema.TABLES "
                                  "WHERE TABLE_SCHEMA = DATABASE()"))
        return {name: value for name, value in found}

    def _table_names(self, conn) -> list[str]:
        if self.postgres:
            query = "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        else:
            query = "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() " \
                    "AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1"
        return list(conn.execute(text(query)).scalars())

    def _structure(self) -> str:
        with self.own.connect() as conn:
            found = conn.execute(text(PG_STRUCTURE if self.postgres else MYSQL_STRUCTURE),
                                 {} if self.postgres else {"db": self.name}).scalars().all()
        return hashlib.sha256("\n".join(found).encode()).hexdigest() if found else ""

    def _end_other_sessions(self) -> None:
        """A test's leftover connection (an open transaction, a held lock) must not block the next test."""
        self.own.dispose()
        with self.admin.connect() as conn:
            if self.postgres:
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": self.name})
            else:
                ids = conn.execute(text("SELECT ID FROM information_schema.PROCESSLIST "
                                        "WHERE DB = :db AND ID <> CONNECTION_ID()"), {"db": self.name}).scalars()
                for session in list(ids):
                    try:
                        conn.execute(text(f"KILL {int(session)}"))
                    except Exception:  # noqa: BLE001 - it ended meanwhile
                        pass
