"""Engines from a URL, built on demand (never at import), with per-dialect care."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError
from .secrets import remember

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

_DRIVERS = {
    "sqlite": "sqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
}
_KNOWN_BACKENDS = ("sqlite", "postgresql", "mysql", "mariadb")
CONNECT_TIMEOUT_SECONDS = 5


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


def dialect_of(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(normalize(url)).get_backend_name().replace("mariadb", "mysql")


def make_engine(url: str, *, pool_size: int = 2) -> "Engine":
    """One engine per invocation: pre-ping, short connect timeout, SQLite in WAL mode."""
    from sqlalchemy import create_engine, event

    normalized = normalize(url)
    dialect = dialect_of(url)
    if dialect == "sqlite":
        path = sqlite_path(url)
        if path is not None and path.parent != Path(""):
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(normalized, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001 - DBAPI types
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # noqa: ANN001
            # Writers take the write lock up front (no lock upgrade deadlocks); reads run in autocommit.
            if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    connect_args: dict[str, object] = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    if dialect == "postgresql":
        connect_args.update(keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3,
                            application_name="cronwarden")
    else:
        connect_args.update(read_timeout=600, write_timeout=600)
    return create_engine(
        normalized,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=4,
        pool_recycle=600,
        connect_args=connect_args,
    )
