"""The application's tables the built-in jobs touch.

Jobs reach them through light references (`ref`) whose table and column
names come from the job's settings, so a deployment points cronwarden at its
own schema. `default_metadata()` defines the default schema for the demo,
for `cronwarden db upgrade --app-tables` and for tests.
"""

from __future__ import annotations

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
)
from sqlalchemy.sql.expression import TableClause

from .models import UTCDateTime


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
        Column("status", String(16), nullable=False, default="pending"),
        Column("attempts", Integer, nullable=False, default=0),
        Column("next_attempt_at", UTCDateTime),
        Column("last_error", Text),
        Column("claimed_by", String(255)),
        Column("claimed_at", UTCDateTime),
        Column("created_at", UTCDateTime, nullable=False),
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


def create_default_tables(engine) -> list[str]:  # noqa: ANN001
    """Create the default application tables that do not exist yet; never alters existing ones."""
    from sqlalchemy import inspect

    md = default_metadata()
    with engine.begin() as conn:
        existing = set(inspect(conn).get_table_names())
        md.create_all(conn, checkfirst=True)
    return [f"created table {name}" for name in md.tables if name not in existing]
