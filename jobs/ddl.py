"""Schema changes on SQLite, PostgreSQL and MariaDB, each checking before it changes (so a migration can run
again after a MariaDB DDL statement committed half of it, or find a table already created from today's model).

Imported by `db upgrade` alone (jobs.migrations, jobs.app_tables), never by a tick.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect, update

if TYPE_CHECKING:
    from sqlalchemy import Column, Table
    from sqlalchemy.engine import Connection


def create_tables(conn: Connection, *tables: Table) -> list[str]:
    """The tables that do not exist yet, with their indexes, as the model declares them."""
    existing = set(inspect(conn).get_table_names())
    created = []
    for table in tables:
        if table.name not in existing:
            table.create(conn)
            created.append(f"created table {table.name}")
    return created


def add_index(conn: Connection, table: Table, name: str) -> list[str]:
    """The model's index `name` on an existing table, when the table lacks it (partial where the dialect can)."""
    index = next(i for i in table.indexes if i.name == name)
    if name in {i["name"] for i in inspect(conn).get_indexes(table.name)}:
        return []
    index.create(conn)
    return [f"created index {name} on {table.name}"]


def add_column(conn: Connection, table: Table, name: str, *, backfill: Any = None) -> list[str]:
    """The model's column `name` on an existing table, when the table lacks it.

    A NOT NULL column is added as NULL, its rows are set to `backfill` (a value, or an SQL expression over
    the table's other columns), then it is made NOT NULL: ALTER COLUMN on PostgreSQL, MODIFY on MariaDB and,
    since SQLite cannot add a constraint to a column, SQLite's own recipe on SQLite (a copy of the table from
    its stored definition, rows copied, indexes recreated from theirs, in the same transaction).
    """
    column = table.c[name]
    if name in _columns(conn, table.name):
        return []
    definition = _definition(conn, column)
    _alter(conn, table, f"ADD COLUMN {definition}")
    if column.nullable:
        return [f"added column {table.name}.{name}"]
    if backfill is not None:
        conn.execute(update(table).where(column.is_(None)).values({name: backfill}))
    dialect = conn.dialect.name
    if dialect == "postgresql":
        _alter(conn, table, f"ALTER COLUMN {_quote(conn, name)} SET NOT NULL")
    elif dialect in ("mysql", "mariadb"):
        _alter(conn, table, f"MODIFY COLUMN {definition} NOT NULL")
    else:
        _sqlite_not_null(conn, table.name, definition)
    return [f"added column {table.name}.{name} (NOT NULL)"]


def add_missing_columns(conn: Connection, table: Table) -> list[str]:
    """Every nullable or defaulted column of the model the table lacks (the application tables' reconcile)."""
    present = _columns(conn, table.name)
    added = []
    for column in table.columns:
        if column.name not in present:
            _alter(conn, table, f"ADD COLUMN {_definition(conn, column)}")
            added.append(f"added column {table.name}.{column.name}")
    return added


def _columns(conn: Connection, table: str) -> set[str]:
    return {col["name"] for col in inspect(conn).get_columns(table)}


def _quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def _alter(conn: Connection, table: Table, clause: str) -> None:
    conn.exec_driver_sql(f"ALTER TABLE {conn.dialect.identifier_preparer.format_table(table)} {clause}")


def _definition(conn: Connection, column: Column) -> str:
    return f"{_quote(conn, column.name)} {column.type.compile(dialect=conn.dialect)}{_default_sql(conn, column)}"


def _default_sql(conn: Connection, column: Column) -> str:
    """The column's default for ALTER TABLE ... ADD COLUMN: its server default, else its scalar Python default.

    SQLite cannot add a column whose default is an expression; there the column is added without one.
    """
    server = getattr(column.server_default, "arg", None)
    if isinstance(server, str):
        return " DEFAULT '" + server.replace("'", "''") + "'"
    if server is not None:
        if conn.dialect.name == "sqlite" and not str(server).strip().lstrip("-").isdigit():
            return ""
        return f" DEFAULT {server.compile(dialect=conn.dialect)}"
    if column.default is not None and getattr(column.default, "is_scalar", False):
        value = getattr(column.default, "arg", None)
        return f" DEFAULT {int(value) if isinstance(value, bool) else value!r}"
    return ""


def _sqlite_not_null(conn: Connection, table: str, definition: str) -> None:
    """https://sqlite.org/lang_altertable.html#otheralter: create the new table from the stored CREATE TABLE
    (the column just added now NOT NULL), copy the rows, drop the old one, rename, recreate the indexes."""
    sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                               (table,)).scalar_one()
    indexes = [row[0] for row in conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL", (table,))]
    head, paren, body = sql.partition("(")
    at = body.rfind(definition)
    if not paren or at < 0:
        raise RuntimeError(f"cannot find the column {definition} in the stored definition of {table}")
    body = body[:at] + definition + " NOT NULL" + body[at + len(definition):]
    scratch = f"{table}__rebuild"
    conn.exec_driver_sql(re.sub(r"^\s*CREATE\s+TABLE\s+.*$", f'CREATE TABLE "{scratch}" ', head, flags=re.I | re.S)
                         + paren + body)
    conn.exec_driver_sql(f'INSERT INTO "{scratch}" SELECT * FROM "{table}"')
    conn.exec_driver_sql(f'DROP TABLE "{table}"')
    conn.exec_driver_sql(f'ALTER TABLE "{scratch}" RENAME TO "{table}"')
    for index in indexes:
        conn.exec_driver_sql(index)
