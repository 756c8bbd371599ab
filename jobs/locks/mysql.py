"""MySQL/MariaDB GET_LOCK on a dedicated connection, freed when the session ends.

Bound: at once when the holder dies on a live host; when the host is lost,
when the server notices the dead connection (net_read_timeout / wait_timeout).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from .postgres import _SessionHeld, take_session_lock


def lock_name(job: str, database: str | None) -> str:
    """GET_LOCK names are server-wide, so they carry the database (two applications on one server
    must not block each other), and at most 64 characters: long names are hashed."""
    name = f"cronwarden.{database or ''}.{job}"
    if len(name) <= 64:
        return name
    return "cronwarden." + hashlib.blake2b(f"{database}\0{job}".encode(), digest_size=16).hexdigest()


class MySQLLockBackend:
    name = "mysql"
    crash_bound = "0 s when the process dies (the server ends its session); wait_timeout if the host is lost"

    def __init__(self, engine) -> None:  # noqa: ANN001
        self.engine = engine

    def try_acquire(self, job: str, ttl: timedelta) -> _SessionHeld | None:
        return take_session_lock(self.engine, "SELECT GET_LOCK(:name, 0)", "SELECT RELEASE_LOCK(:name)",
                                 {"name": lock_name(job, self.engine.url.database)})
