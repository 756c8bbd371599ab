"""Setup mistakes named in one line (exit 78), never "unexpected": a database that does not exist, an
SQLite file that cannot be used, the tool's tables missing or older than this version, and the
application tables and columns a job declares it needs (checked once per run, before it is recorded)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

UPGRADE = "run `cronwarden db upgrade`, or set CRONWARDEN_DATABASE_URL to the right database"
_PG_NO_DATABASE = re.compile(r'database "([^"]+)" does not exist')
_PG_NO_ROLE = re.compile(r'role "[^"]+" does not exist')


def _orig(exc: BaseException) -> BaseException:
    return getattr(exc, "orig", None) or exc


def _code(exc: BaseException) -> object:
    """PostgreSQL's SQLSTATE or MySQL's error number, whichever the driver gives."""
    orig = _orig(exc)
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def missing_table(exc: BaseException) -> bool:
    text = str(_orig(exc)).lower()
    return _code(exc) in ("42P01", 1146) or "no such table" in text


def missing_column(exc: BaseException) -> bool:
    text = str(_orig(exc)).lower()
    return _code(exc) in ("42703", 1054) or "no such column" in text or "has no column named" in text


def tool_schema_problem(safe_url: str, exc: BaseException | None = None, *, older: bool = False) -> ConfigError:
    """The tool's own tables are missing (a fresh database) or older than this version (a stored version
    behind this cronwarden's, or a read that found a column missing)."""
    if older or (exc is not None and missing_column(exc)):
        return ConfigError(f"database {safe_url} holds the tables of an older cronwarden ({UPGRADE})")
    return ConfigError(f"database {safe_url} has no cronwarden tables ({UPGRADE})")


def explain(exc: BaseException, url: str) -> ConfigError | None:
    """The setup mistake behind a database error outside a job, or None when it is something else."""
    from .db import dialect_of, sqlite_path
    from .errors import CronwardenError
    from .secrets import redact

    if isinstance(exc, CronwardenError):
        return None
    safe_url = redact(url)
    dialect = dialect_of(url)
    if dialect == "sqlite":
        from . import sqlite_file

        path = sqlite_path(url)
        if path is not None and sqlite_file.is_file_problem(exc):
            return sqlite_file.problem(path, exc)
    name = _missing_database(exc, dialect)
    if name is not None:
        return ConfigError(f"database {name!r} does not exist on the server of {safe_url}: create it "
                           f"(CREATE DATABASE {name}) and run `cronwarden db upgrade`, or fix "
                           f"database_url / CRONWARDEN_DATABASE_URL")
    if _login_refused(exc, dialect):
        from .errors import one_line

        return ConfigError(f"the database server refused the login of {safe_url} ({one_line(exc)}): fix the "
                           f"user or password in database_url / CRONWARDEN_DATABASE_URL")
    if missing_table(exc) or missing_column(exc):
        return tool_schema_problem(safe_url, exc)
    return None


def _login_refused(exc: BaseException, dialect: str) -> bool:
    if dialect == "mysql":
        return _code(exc) in (1044, 1045, 1698)
    if dialect != "postgresql":
        return False
    text = str(_orig(exc))
    return (_code(exc) in ("28000", "28P01") or "authentication failed" in text or "no pg_hba.conf entry" in text
            or _PG_NO_ROLE.search(text) is not None)


def _missing_database(exc: BaseException, dialect: str) -> str | None:
    if dialect == "mysql" and _code(exc) == 1049:
        found = re.search(r"unknown database '([^']+)'", str(_orig(exc)), re.IGNORECASE)
        return found.group(1) if found else "?"
    if dialect == "postgresql":
        found = _PG_NO_DATABASE.search(str(_orig(exc)))
        if found is not None and (_code(exc) in (None, "3D000")):
            return found.group(1)
    return None


def check_needs(engine: Engine, job: str, needs: Mapping[str, Iterable[str]], hint: str) -> None:
    """Refuse (ConfigError) when a table the job uses is missing or lacks a column: one reflection per table.

    needs: {table (optionally `schema.table`): the columns the job reads or writes}; hint: how to fix
    it for this job (its settings).
    """
    from sqlalchemy import inspect
    from sqlalchemy.exc import NoSuchTableError

    with engine.connect() as conn:
        inspector = inspect(conn)
        for name, columns in needs.items():
            schema, _, table = name.rpartition(".")
            try:
                present = {c["name"].lower() for c in inspector.get_columns(table, schema=schema or None)}
            except NoSuchTableError:
                present = set()
            if not present:
                raise ConfigError(f"{job}: table {name} does not exist (create the default tables with "
                                  f"`cronwarden db upgrade --app-tables`, or {hint})")
            lacking = [c for c in dict.fromkeys(columns) if c.lower() not in present]
            if lacking:
                raise ConfigError(f"{job}: table {name} has no column {', '.join(lacking)} (add "
                                  f"{'it' if len(lacking) == 1 else 'them'}: `cronwarden db upgrade --app-tables` "
                                  f"adds those of the default tables; or {hint})")
