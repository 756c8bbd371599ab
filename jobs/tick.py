"""The quick decision of a scheduled tick through the database driver alone (no SQLAlchemy): disabled,
paused, not due, or due but locked by another process. Anything else, or anything it cannot vouch for,
raises HandOver, and the full runner (jobs/runner.py) decides as always.

It decides with the runner's own pieces (jobs.due, the lock backends' key naming, jobs.files); it never
writes: a tick that has work to do, a database or table to create, or runs to reap is the runner's, and so
is a locked tick of an `overlap = "buffer_one"` job that must record the run it buffers (one that finds a
run already owed writes nothing, so it is decided here).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from .due import EXECUTION_COLUMNS, SCHEMA_VERSION, locked, owed, skip
from .outcome import RunReport, RunStatus, Trigger

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see jobs/__init__.py)
if TYPE_CHECKING:
    from typing import Any

    from .config import Config
    from .dburl import PlainURL

CONNECT_TIMEOUT = 2  # seconds: a database slower than this is left to the runner's retries and bounds
_TIMES = frozenset(("last_executed_at", "next_scheduled_at", "last_finished_at", "last_success_at",
                    "schedule_slot_at", "next_retry_at", "paused_at", "first_seen_at", "owed_run_at",
                    "last_failure_at"))


class HandOver(Exception):
    """The quick path does not decide this tick: the full CLI does."""


def decide(config: Config, names: list[str], now: datetime) -> list[RunReport]:
    """The reports of scheduled ticks of these jobs (one, or run-due's) that do nothing, in order, through one
    connection; HandOver when any of them has work, or at any doubt."""
    from . import dburl

    reports = {name: RunReport(name, RunStatus.DISABLED, Trigger.SCHEDULED)
               for name in names if not config.job(name).enabled}
    live = [name for name in names if name not in reports]
    if live:
        url = dburl.parse(config.database_url)
        backend = _backend(config, url)
        conn = _connect(url, config)
        try:
            for name in live:
                reports[name] = _decide(conn, url, backend, config, name, now)
        finally:
            conn.close()
    return [reports[name] for name in names]


def _decide(conn: Any, url: PlainURL, backend: str, config: Config, name: str, now: datetime) -> RunReport:
    job = config.job(name)
    row = _read(conn, url.dialect, name)
    report = skip(job, row, Trigger.SCHEDULED, now)
    if report is not None:
        return report
    if job.spec.validate is not None:
        job.spec.validate(job.settings)
    if _held_elsewhere(conn, backend, config, url, name):
        if job.overlap == "buffer_one" and not owed(row):
            raise HandOver(f"{name} is running: its owed run is recorded by the runner")
        return locked(job, Trigger.SCHEDULED, buffered=job.overlap == "buffer_one")
    raise HandOver(f"{name} is due")


def _backend(config: Config, url: PlainURL) -> str:
    """jobs.locks.backend_name, from the plain URL; the lease is left to the runner."""
    name = config.locks.backend
    if name == "auto":
        name = {"sqlite": "file", "postgresql": "postgres", "mysql": "mysql"}[url.dialect]
    if name not in ("file", "postgres", "mysql") or (name != "file" and name != {"postgresql": "postgres",
                                                                                  "mysql": "mysql"}.get(url.dialect)):
        raise HandOver(f"lock backend {name}")
    return name


def _connect(url: PlainURL, config: Config) -> Any:
    if url.dialect == "sqlite":
        return _sqlite(Path(url.database))
    bounds = config.locks.host_loss()
    if url.dialect == "postgresql":
        import psycopg

        args = {**bounds.postgres_connect_args({}), "application_name": "cronwarden",
                "connect_timeout": min(CONNECT_TIMEOUT, bounds.connect_timeout)}
        return psycopg.connect(host=url.host, port=url.port, user=url.user, password=url.password,
                               dbname=url.database, autocommit=True, **args)
    from .mysql_driver import connect

    return connect(host=url.host, port=url.port or 3306, user=url.user, password=url.password or "",
                   database=url.database, charset="utf8mb4", autocommit=True,
                   connect_timeout=min(CONNECT_TIMEOUT, bounds.connect_timeout),
                   read_timeout=bounds.notice, write_timeout=bounds.notice)


def _sqlite(path: Path) -> Any:
    """An existing WAL database this user can write (anything else is the runner's: it creates, converts
    or names the problem)."""
    import sqlite3
    from urllib.parse import quote

    if not (path.is_file() and os.access(path, os.R_OK | os.W_OK)
            and os.access(path.parent if str(path.parent) else ".", os.W_OK | os.X_OK)):
        raise HandOver(f"SQLite file {path}")
    conn = sqlite3.connect("file:" + quote(str(path.resolve())) + "?mode=rw", uri=True, timeout=30,
                           isolation_level=None)
    try:
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            raise HandOver("SQLite database not in WAL mode")
    except BaseException:
        conn.close()
        raise
    return conn


def _read(conn: Any, dialect: str, name: str) -> dict[str, Any] | None:
    """The job's tracking row as the runner sees it (aware UTC datetimes, a bool `paused`), once the
    stored schema version is this one's."""
    mark = "?" if dialect == "sqlite" else "%s"
    sql = f"SELECT {', '.join(EXECUTION_COLUMNS)} FROM recurring_job_executions WHERE job_name = {mark}"
    cur = conn.cursor()
    try:
        cur.execute("SELECT version FROM cronwarden_schema WHERE id = 1")
        if cur.fetchone() != (SCHEMA_VERSION,):
            raise HandOver("the tool's tables are not this version's")  # jobs.schema.require decides
        cur.execute(sql, (name,))
        found = cur.fetchone()
    finally:
        cur.close()
    if found is None:
        return None
    row = dict(zip(EXECUTION_COLUMNS, found))
    for key in _TIMES:
        row[key] = _utc(row[key])
    row["paused"] = bool(row["paused"])
    return row


def _utc(value: Any) -> datetime | None:
    """What jobs.models.UTCDateTime gives back: naive UTC in the database, aware UTC here."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise HandOver(f"unexpected timestamp {value!r}")
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _held_elsewhere(conn: Any, backend: str, config: Config, url: PlainURL, name: str) -> bool:
    """Whether another process holds the job's lock now. A free lock is not kept: the runner takes it."""
    if backend == "file":
        return _file_held(config, url, name)
    cur = conn.cursor()
    try:
        if backend == "postgres":
            from .locks.postgres import advisory_key

            key = advisory_key(name)
            cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
            if cur.fetchone()[0] is not True:
                return True
            cur.execute("SELECT pg_advisory_unlock(%s)", (key,))
            return False
        from .locks.mysql import lock_name

        cur.execute("SELECT IS_FREE_LOCK(%s)", (lock_name(name, url.database),))
        return cur.fetchone()[0] == 0
    finally:
        cur.close()


def _file_held(config: Config, url: PlainURL, name: str) -> bool:
    """jobs.locks.lock_directory, then the file backend's own probe."""
    from .locks.file import held_elsewhere

    directory = config.locks.directory
    if directory is None:
        directory = Path(url.database).parent / "locks" if url.dialect == "sqlite" else Path("locks")
    return held_elsewhere(Path(directory), name)
