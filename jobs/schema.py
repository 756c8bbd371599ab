"""Whether the tool's tables are the version this cronwarden knows: read once per engine before the first use.

A read never changes the schema. `db upgrade` does (jobs.migrations); so does a command that writes to the
embedded default database (`sqlite:///cronwarden.db`, the URL the tool uses when none is configured), on
first use, so that the first tick on a fresh machine just works. Anywhere else a missing or older schema,
or one of a newer cronwarden, is a ConfigError (exit 78) naming the fix, and nothing is touched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from weakref import WeakSet

from sqlalchemy import select
from sqlalchemy.exc import OperationalError, ProgrammingError

from .models import SCHEMA_VERSION, schema_version

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from .errors import ConfigError

_CURRENT: WeakSet[Engine] = WeakSet()


def require(engine: Engine, *, writes: bool, conn: Connection | None = None) -> None:
    """Refuse (ConfigError) unless the database holds this version's tables; one read per engine.

    writes: the command writes (a job run, pause, enqueue...): on the embedded default database it then
    creates or upgrades the tables itself. conn: an autocommit connection to read through (a tick's
    read then costs one connection checkout, not two).
    """
    if engine in _CURRENT:
        return
    stored = stored_version(engine, conn)
    if stored != SCHEMA_VERSION:
        if stored is not None and stored > SCHEMA_VERSION:
            raise newer_problem(engine, stored)
        if not (writes and is_embedded_default(engine)):
            from .preflight import tool_schema_problem

            raise tool_schema_problem(_safe_url(engine), older=stored is not None)
        upgrade(engine)
    _CURRENT.add(engine)


def stored_version(engine: Engine, conn: Connection | None = None) -> int | None:
    """The stored schema version, or None when the database has no cronwarden tables."""
    from .preflight import missing_table

    query = select(schema_version.c.version).where(schema_version.c.id == 1)
    try:
        if conn is not None:
            return conn.execute(query).scalar()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as own:
            return own.execute(query).scalar()
    except (OperationalError, ProgrammingError) as exc:
        if missing_table(exc):
            return None
        raise


def upgrade(engine: Engine) -> list[str]:
    """`db upgrade`: bring the tool's tables to this version (jobs.migrations); returns what changed."""
    from .migrations import upgrade as migrate

    changes = migrate(engine)
    _CURRENT.add(engine)
    return changes


def is_embedded_default(engine: Engine) -> bool:
    from .config import embedded_default

    return embedded_default(engine.url.render_as_string())


def newer_problem(engine: Engine, stored: int) -> ConfigError:
    from .errors import ConfigError

    return ConfigError(f"database {_safe_url(engine)} holds the tables of a newer cronwarden (schema version "
                       f"{stored}; this one knows {SCHEMA_VERSION}): run that cronwarden or a later one, "
                       f"not this one")


def _safe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)
