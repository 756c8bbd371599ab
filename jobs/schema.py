"""`db upgrade`: create the tool's tables, or add what an older version lacks. Never drops."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import inspect, select
from sqlalchemy.exc import DBAPIError

from .models import SCHEMA_VERSION, metadata, schema_version
from .queue import models as _queue_models  # noqa: F401 - registers queued_jobs on the tool's metadata

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine


def upgrade(engine: "Engine") -> list[str]:
    """Bring the tool's tables to the current version; returns what it changed. Idempotent."""
    try:
        return _upgrade(engine)
    except DBAPIError:
        # Another process created the same tables at the same moment: look again.
        return _upgrade(engine)


def _upgrade(engine: "Engine") -> list[str]:
    changes: list[str] = []
    with engine.begin() as conn:
        existing = set(inspect(conn).get_table_names())
        for table in metadata.sorted_tables:
            if table.name not in existing:
                table.create(conn, checkfirst=True)
                changes.append(f"created table {table.name}")
            else:
                changes.extend(add_missing_columns(conn, table))
        current = conn.execute(select(schema_version.c.version).where(schema_version.c.id == 1)).scalar()
        if current is None:
            conn.execute(schema_version.insert().values(id=1, version=SCHEMA_VERSION))
        elif current < SCHEMA_VERSION:
            conn.execute(schema_version.update().where(schema_version.c.id == 1).values(version=SCHEMA_VERSION))
            changes.append(f"schema version {current} -> {SCHEMA_VERSION}")
    return changes


def add_missing_columns(conn: "Connection", table) -> list[str]:  # noqa: ANN001
    present = {col["name"] for col in inspect(conn).get_columns(table.name)}
    added = []
    preparer = conn.dialect.identifier_preparer
    for column in table.columns:
        if column.name in present:
            continue
        ddl_type = column.type.compile(dialect=conn.dialect)
        default = _default_sql(conn, column)
        conn.exec_driver_sql(
            f"ALTER TABLE {preparer.quote(table.name)} ADD COLUMN {preparer.quote(column.name)} {ddl_type}{default}"
        )
        added.append(f"added column {table.name}.{column.name}")
    return added


def _default_sql(conn: "Connection", column) -> str:  # noqa: ANN001
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
        value = column.default.arg
        return f" DEFAULT {int(value) if isinstance(value, bool) else value!r}"
    return ""
