"""The application's tables the built-in jobs touch.

Jobs reach them through light references (`ref`) whose table and column
names come from the job's settings, so a deployment points cronwarden at its
own schema. `default_metadata()` defines the default schema for the demo,
for `cronwarden db upgrade --app-tables` and for tests.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    column,
    table,
    text,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement, TableClause

from .models import UTCDateTime


class utc_now(FunctionElement):  # noqa: N801 - reads as the SQL function it renders
    """The server's current time as naive UTC, the form UTCDateTime stores: a column's server default, so an
    application's plain INSERT gets the same created_at as a row written through SQLAlchemy."""

    type = UTCDateTime()
    inherit_cache = True


@compiles(utc_now)
def _utc_now_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    return "(strftime('%Y-%m-%d %H:%M:%f', 'now'))"


@compiles(utc_now, "postgresql")
def _utc_now_postgresql(element: Any, compiler: Any, **kw: Any) -> str:
    return "(now() AT TIME ZONE 'utc')"


@compiles(utc_now, "mysql")
@compiles(utc_now, "mariadb")
def _utc_now_mysql(element: Any, compiler: Any, **kw: Any) -> str:
    return "(UTC_TIMESTAMP(6))"


def ref(name: str, *, times: tuple[str, ...] = (), others: tuple[str, ...] = ()) -> TableClause:
    """A reference to an application table (optionally `schema.table`); time columns bind as UTC.

    Names come from validated settings; SQLAlchemy quotes them, nothing is formatted into SQL.
    """
    schema, _, bare = name.rpartition(".")
    return table(bare, *(column(c, UTCDateTime) for c in times), *(column(c) for c in others),
                 schema=schema or None)


def default_metadata() -> MetaData:
    """The default application schema (users, refresh_tokens, email_queue, logs)."""
    md = MetaData()
    from sqlalchemy import Table

    Table(
        "users", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("username", String(150), nullable=False, unique=True),
        Column("email", String(255), nullable=False),
        Column("password_hash", String(255), nullable=False),
        Column("is_admin", Boolean, nullable=False, default=False),
        Column("last_login_ip", String(45)),
        Column("last_login_at", UTCDateTime),
        Column("created_at", UTCDateTime, nullable=False),
        Index("ix_users_last_login_at", "last_login_at"),
    )
    Table(
        "refresh_tokens", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("user_id", Integer, nullable=False),
        Column("token_hash", String(128), nullable=False),
        Column("expires_at", UTCDateTime, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Index("ix_refresh_tokens_expires_at", "expires_at"),
    )
    Table(
        "email_queue", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("to_address", String(255), nullable=False),
        Column("subject", String(998), nullable=False),
        Column("body", Text, nullable=False),
        Column("status", String(16), nullable=False, default="pending", server_default="pending"),
        Column("attempts", Integer, nullable=False, default=0, server_default=text("0")),
        Column("next_attempt_at", UTCDateTime),
        Column("last_error", Text),
        Column("claimed_by", String(255)),
        Column("claimed_at", UTCDateTime),
        Column("created_at", UTCDateTime, nullable=False, server_default=utc_now()),
        Column("sent_at", UTCDateTime),
        Index("ix_email_queue_status_next", "status", "next_attempt_at"),
        Index("ix_email_queue_status_id", "status", "id"),
    )
    Table(
        "logs", md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("level", String(16), nullable=False),
        Column("message", Text, nullable=False),
        Column("created_at", UTCDateTime, nullable=False),
        Index("ix_logs_created_at", "created_at"),
    )
    return md


def create_default_tables(engine: Any) -> list[str]:
    """Create the default application tables that do not exist yet, and add the columns an existing one
    lacks (an email_queue of an older version without claimed_by, claimed_at); never drops or changes one."""
    from sqlalchemy import inspect

    from .ddl import add_missing_columns

    md = default_metadata()
    changes = []
    with engine.begin() as conn:
        existing = set(inspect(conn).get_table_names())
        md.create_all(conn, checkfirst=True)
        for name, table in md.tables.items():
            changes += add_missing_columns(conn, table) if name in existing else [f"created table {name}"]
    return changes
