"""PostgreSQL session advisory lock on a dedicated connection.

The server frees it when the session ends: at once when the holder dies on a
live host (the socket closes), and within TCP keepalive time (30 s idle +
3 × 10 s probes) when the host itself is lost.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from ..errors import LeaseLost


def advisory_key(job: str) -> int:
    """A stable signed 64-bit key per job name (hashtext() is not stable across versions)."""
    digest = hashlib.blake2b(f"cronwarden:{job}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class _SessionHeld:
    """A session-level lock on a dedicated autocommit connection (no transaction stays open on it,
    so a long run does not hold back PostgreSQL's vacuum horizon)."""

    def __init__(self, conn, release_sql: str, params: dict) -> None:  # noqa: ANN001
        self._conn = conn
        self._release_sql = release_sql
        self._params = params

    def verify(self, conn) -> None:  # noqa: ANN001
        """The lock lives as long as its session: a dead session means another may hold it."""
        from sqlalchemy import text

        try:
            self._conn.execute(text("SELECT 1")).scalar()
        except Exception as exc:  # noqa: BLE001 - any failure means the session is gone
            raise LeaseLost(f"the lock's database session was lost ({type(exc).__name__})") from None

    def check(self) -> None:
        """A session lock is known lost only by asking its session, which verify does inside the batch."""

    def release(self) -> None:
        if self._conn is None:
            return
        from sqlalchemy import text

        conn, self._conn = self._conn, None
        try:
            conn.execute(text(self._release_sql), self._params)
        except Exception:  # noqa: BLE001 - closing the session frees the lock anyway
            conn.invalidate()
        finally:
            conn.close()


def take_session_lock(engine, acquire_sql: str, release_sql: str, params: dict) -> _SessionHeld | None:  # noqa: ANN001
    """Run a non-blocking session-lock function on a dedicated connection; keep it only if granted."""
    from sqlalchemy import text

    conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        granted = conn.execute(text(acquire_sql), params).scalar()
    except BaseException:
        conn.close()
        raise
    if granted not in (True, 1):
        conn.close()
        return None
    return _SessionHeld(conn, release_sql, params)


class PostgresLockBackend:
    name = "postgres"
    crash_bound = "0 s when the process dies (the server ends its session); at most ~60 s if the host is lost"

    def __init__(self, engine) -> None:  # noqa: ANN001
        self.engine = engine

    def try_acquire(self, job: str, ttl: timedelta) -> _SessionHeld | None:
        return take_session_lock(self.engine, "SELECT pg_try_advisory_lock(:key)", "SELECT pg_advisory_unlock(:key)",
                                 {"key": advisory_key(job)})
