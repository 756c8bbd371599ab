"""MySQL/MariaDB GET_LOCK on a dedicated connection, freed when the session ends.

Bound: at once when the holder dies on a live host; when the host is lost,
within half of `[locks] host_loss_bound` (30 s by default): the session's
wait_timeout, net_read_timeout and net_write_timeout are set to it
(jobs/host_loss.py), and a live holder pings its idle lock session well
inside wait_timeout.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from . import Unlocked, probe_unlock
from .postgres import _SessionHeld, take_session_lock

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see jobs/__init__.py)
if TYPE_CHECKING:
    from typing import Any


def lock_name(job: str, database: str | None) -> str:
    """GET_LOCK names are server-wide, so they carry the database (two applications on one server
    must not block each other), and at most 64 characters: long names are hashed."""
    name = f"cronwarden.{database or ''}.{job}"
    if len(name) <= 64:
        return name
    return "cronwarden." + hashlib.blake2b(f"{database}\0{job}".encode(), digest_size=16).hexdigest()


class MySQLLockBackend:
    name = "mysql"
    crash_bound = ("0 s when the process dies (the server ends its session); half of [locks] host_loss_bound "
                   "(30 s by default, the session's wait_timeout) if the host is lost")

    def __init__(self, engine: Any, ping_every: float | None = None) -> None:
        from ..host_loss import HostLossBounds

        self.engine = engine
        self.ping_every = ping_every or HostLossBounds().lock_ping_seconds

    def try_acquire(self, job: str, ttl: timedelta) -> _SessionHeld | None:
        return take_session_lock(self.engine, "SELECT GET_LOCK(:name, 0)", "SELECT RELEASE_LOCK(:name)",
                                 {"name": lock_name(job, self.engine.url.database)}, self.ping_every)

    def unlock(self, job: str, ttl: timedelta) -> Unlocked:
        """The server ends a dead holder's session and its lock with it: nothing is ever stale."""
        return probe_unlock(self, job, ttl)
