"""Non-blocking, per-job locks. "Locked" is a normal outcome (None), never an error.

Every backend states `crash_bound`: how long a holder killed with SIGKILL can
keep the job locked. Backends are chosen from the database URL unless
configured (`[locks] backend`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

from ..execution import owner_id as owner_id  # where lock callers have always found it
from ..records import FrozenRecord

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see jobs/__init__.py)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Protocol

    from sqlalchemy.engine import Connection, Engine

    from ..config import Config

    # The backends' shapes, for the type checker: a locked tick imports this package, not typing.
    class Held(Protocol):
        """A lock this process holds."""

        def verify(self, conn: Connection) -> None:
            """Raise LeaseLost if the lock is no longer ours; called inside each batch before commit."""

        def check(self) -> None:
            """Raise LeaseLost if the lock is known lost without asking the database; called before each batch."""

        def release(self) -> None:
            """Give the lock back; safe to call twice."""

    class Acquires(Protocol):
        def try_acquire(self, job: str, ttl: timedelta) -> Held | None:
            """Take the job's lock without waiting; None when another process holds it."""

    class LockBackend(Acquires, Protocol):
        name: str
        crash_bound: str

        def unlock(self, job: str, ttl: timedelta) -> Unlocked:
            """`cronwarden unlock`: end a stale holder's lock where this backend can outlive its holder."""


class Unlock(Enum):
    BROKEN = "broken"  # a stale holder's lock was ended
    NOT_LOCKED = "not locked"
    HELD = "held"  # a live process holds it: nothing was broken, it frees itself when that process exits


@dataclass(init=False, repr=False, eq=False)
class Unlocked(FrozenRecord):
    """What `cronwarden unlock` did to a job's lock."""

    outcome: Unlock
    note: str | None = None  # for NOT_LOCKED: why no lock of this backend can outlive its holder

    def __init__(self, outcome: Unlock, note: str | None = None) -> None:
        object.__setattr__(self, "outcome", outcome)
        object.__setattr__(self, "note", note)


def probe_unlock(backend: LockBackend, job: str, ttl: timedelta) -> Unlocked:
    """Unlock for a lock that dies with its holder (session, flock): nothing to break; a lock that cannot be
    taken is held by a live process."""
    held = backend.try_acquire(job, ttl)
    if held is None:
        return Unlocked(Unlock.HELD)
    held.release()
    return Unlocked(Unlock.NOT_LOCKED, backend.crash_bound)


def backend_name(config: Config) -> str:
    if config.locks.backend != "auto":
        return config.locks.backend
    from ..db import dialect_of

    return {"sqlite": "file", "postgresql": "postgres", "mysql": "mysql"}.get(dialect_of(config.database_url), "lease")


def backend_for(config: Config, engine: Engine) -> LockBackend:
    name = backend_name(config)
    if name == "file":
        from .file import FileLockBackend

        return FileLockBackend(lock_directory(config))
    if name == "postgres":
        from .postgres import PostgresLockBackend

        return PostgresLockBackend(engine)
    if name == "mysql":
        from .mysql import MySQLLockBackend

        return MySQLLockBackend(engine, ping_every=config.locks.host_loss().lock_ping_seconds)
    from .lease import LeaseLockBackend

    return LeaseLockBackend(engine)


def lock_directory(config: Config) -> Path:
    """[locks] directory or CRONWARDEN_LOCK_DIR; else `locks/` beside the SQLite file; else ./locks."""
    from pathlib import Path

    from ..db import sqlite_path

    if config.locks.directory is not None:
        return config.locks.directory
    path = sqlite_path(config.database_url)
    return (path.parent if path is not None else Path(".")) / "locks"


@contextmanager
def holding(backend: Acquires, job: str, ttl: timedelta) -> Iterator[Held | None]:
    held = backend.try_acquire(job, ttl)
    try:
        yield held
    finally:
        if held is not None:
            held.release()
