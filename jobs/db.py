"""Engines from a URL, built on demand (never at import), with per-dialect care."""

from __future__ import annotations

from datetime import timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .secrets import remember

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection, Engine

    from .host_loss import HostLossBounds

_DRIVERS = {
    "sqlite": "sqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
}
_KNOWN_BACKENDS = ("sqlite", "postgresql", "mysql", "mariadb")


def validate_url(url: str) -> None:
    """Refuse an unparsable URL or an unknown database before anything connects."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(normalize(url))
    except (ArgumentError, ValueError):
        raise ConfigError("database_url: not a database URL (expected e.g. sqlite:///cronwarden.db, "
                          "postgresql://user@host/db, mysql://user@host/db)") from None
    remember(parsed.password)
    if parsed.get_backend_name() not in _KNOWN_BACKENDS:
        raise ConfigError(f"database_url: unsupported database {parsed.get_backend_name()!r} "
                          f"(supported: sqlite, postgresql, mysql, mariadb)")
    try:
        parsed.get_dialect()
    except Exception:  # noqa: BLE001 - NoSuchModuleError and friends: the driver part is wrong
        raise ConfigError(f"database_url: unknown or missing driver {parsed.drivername!r}") from None


def normalize(url: str) -> str:
    """Plain postgresql:// and mysql:// URLs get the driver this tool ships with."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    return f"{_DRIVERS.get(scheme.lower(), scheme)}://{rest}"


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for other databases or :memory:)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(normalize(url))
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def family(dialect_name: str) -> str:
    """'sqlite', 'postgresql' or 'mysql': MariaDB speaks MySQL's SQL, and the tool treats them as one."""
    return "mysql" if dialect_name == "mariadb" else dialect_name


def dialect_of(url: str) -> str:
    from sqlalchemy.engine import make_url

    return family(make_url(normalize(url)).get_backend_name())


def make_engine(url: str, *, pool_size: int = 2, bounds: HostLossBounds | None = None,
                read_only: bool = False, create: bool = True) -> Engine:
    """One engine per invocation: pre-ping, SQLite in WAL mode; on a server, every timeout and session
    setting that bounds a silent or vanished peer derives from `bounds` ([locks] host_loss_bound).

    read_only: for commands that only read. On SQLite it never creates the database file (a missing
    one is a ConfigError) and opens it read-only where this user cannot write it; a command that
    writes creates a missing file and folder private to its user (jobs.sqlite_file) when `create`,
    else a missing file is a ConfigError too (only `db upgrade` creates a database other than the
    embedded default).
    """
    from sqlalchemy import create_engine, event
    from sqlalchemy.engine import make_url

    normalized = normalize(url)
    dialect = dialect_of(url)
    if dialect == "sqlite":
        from . import sqlite_file
        from .secrets import redact

        path = sqlite_path(url)
        kwargs: dict[str, Any] = {"connect_args": {"timeout": 30}}
        if path is not None and read_only:
            import sqlite3

            uri = sqlite_file.reader_uri(path, redact(url))
            kwargs = {"creator": lambda: sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)}
        elif path is not None and not create and not path.exists():
            raise sqlite_file.missing(path, redact(url))
        elif path is not None:
            sqlite_file.prepare(path)
        engine = create_engine(normalized, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            if not read_only:
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            # Writers take the write lock up front (no lock upgrade deadlocks); reads run in autocommit,
            # and a command that only reads never takes the write lock.
            if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
                conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    from .host_loss import HostLossBounds

    bounds = bounds or HostLossBounds()
    given = make_url(normalized).query
    if dialect == "postgresql":
        connect_args: dict[str, Any] = {**bounds.postgres_connect_args(given), "application_name": "cronwarden"}
    else:
        connect_args = {k: v for k, v in bounds.mysql_client().items() if k not in given}
    engine = create_engine(
        normalized,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=4,
        pool_recycle=600,  # a pooled session the server ended meanwhile (wait_timeout) fails the pre-ping
        connect_args=connect_args,
    )
    session_sql = bounds.mysql_session_sql(str(given.get("init_command") or "")) if dialect == "mysql" else None
    if dialect == "mysql":

        @event.listens_for(engine, "do_connect")
        def _mysql_connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
            from .mysql_driver import connection_class

            return connection_class()(*cargs, **cparams)

    if session_sql is not None:

        @event.listens_for(engine, "connect")
        def _mysql_session(dbapi_conn: Any, _record: Any) -> None:
            with dbapi_conn.cursor() as cur:
                cur.execute(session_sql)

    return engine


def insert_many(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert many rows in one statement of constant text on PostgreSQL: `INSERT ... SELECT FROM json_to_recordset`.

    psycopg runs an executemany as one statement per row; a multi-row VALUES list is a new text (to
    convert, parse and plan) for every row count; arrays per column are dumped element by element in
    Python. One JSON document, encoded in C, keeps a single short text and a fraction of the work on
    both sides. Elsewhere the driver's executemany is already batched (SQLite in process, PyMySQL
    rewrites it into one multi-row INSERT).
    """
    if not rows:
        return
    if conn.dialect.name != "postgresql" or len(rows) == 1:
        from sqlalchemy import insert

        conn.execute(insert(table), rows)
        return
    import json

    names = tuple(rows[0])
    sql, converters = _json_insert(conn.dialect, table, names)
    if converters:
        rows = [dict(row) for row in rows]
        for row in rows:
            for name, fn in converters:
                row[name] = fn(row[name])
    conn.exec_driver_sql(sql, (json.dumps(rows),))


_JSON_INSERTS: dict[tuple[int, str, tuple[str, ...]], tuple[str, list[tuple[str, Any]]]] = {}


def _json_insert(dialect: Any, table: Table, names: tuple[str, ...]) -> tuple[str, list[tuple[str, Any]]]:
    """The statement for these columns, and how to turn each value that JSON cannot carry into text."""
    key = (id(dialect), table.name, names)
    if key not in _JSON_INSERTS:
        from .models import UTCDateTime

        quote = dialect.identifier_preparer.quote
        columns = [table.c[name] for name in names]
        listed = ", ".join(quote(c.name) for c in columns)
        types = ", ".join(f"{quote(c.name)} {c.type.compile(dialect=dialect)}" for c in columns)
        sql = (f"INSERT INTO {dialect.identifier_preparer.format_table(table)} ({listed}) "
               f"SELECT {listed} FROM json_to_recordset(%s::json) AS r({types})")
        converters: list[tuple[str, Any]] = []
        for c in columns:
            if isinstance(c.type, UTCDateTime):
                converters.append((c.name, _utc_text))
            elif c.type.python_type not in (str, int, float, bool):
                raise TypeError(f"insert_many: column {c.name} ({c.type}) cannot go through JSON")
        _JSON_INSERTS[key] = sql, converters
    return _JSON_INSERTS[key]


def _utc_text(value: Any) -> str | None:
    """An aware datetime as naive UTC text (what UTCDateTime stores)."""
    if value is None:
        return None
    if value.tzinfo is not timezone.utc:
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(timezone.utc)
    return value.replace(tzinfo=None).isoformat()
