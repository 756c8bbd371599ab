"""PostgreSQL session advisory lock on a dedicated connection.

The server frees it when the session ends: at once when the holder dies on a
live host (the socket closes), and within half of `[locks] host_loss_bound`
(30 s by default: server TCP keepalives and tcp_user_timeout, set per session,
jobs/host_loss.py) when the host itself is lost.
"""

from __future__ import annotations

import hashlib
import os
import threading
from datetime import timedelta

from ..errors import LeaseLost
from . import Unlocked, probe_unlock

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see jobs/__init__.py)
if TYPE_CHECKING:
    from typing import Any

_TCP_ESTABLISHED = 1  # tcp_info.tcpi_state (linux/tcp_states.h)


def advisory_key(job: str) -> int:
    """A stable signed 64-bit key per job name (hashtext() is not stable across versions)."""
    digest = hashlib.blake2b(f"cronwarden:{job}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class _SessionHeld:
    """A session-level lock on a dedicated autocommit connection (no transaction stays open on it,
    so a long run does not hold back PostgreSQL's vacuum horizon).

    ping_every: where the server ends sessions idle longer than wait_timeout (MariaDB/MySQL, which
    have no per-session TCP keepalive), a thread pings the session this often, so a live holder keeps
    its lock however long it works between batches, while a vanished one loses it within wait_timeout.
    A failed ping marks the lock lost; the next verify() refuses to commit.
    """

    def __init__(self, conn: Any, release_sql: str, params: dict, ping_every: float | None = None) -> None:
        self._conn = conn
        self._release_sql = release_sql
        self._params = params
        self._guard = threading.Lock()
        self._lost: str | None = None
        self._stop = threading.Event()
        self._pinger: threading.Thread | None = None
        if ping_every is not None:
            self._pinger = threading.Thread(target=self._ping_loop, args=(ping_every,), name="lock-ping", daemon=True)
            self._pinger.start()

    def _ping(self) -> None:
        from sqlalchemy import text

        with self._guard:
            if self._conn is not None:
                self._conn.execute(text("SELECT 1")).scalar()

    def _ping_loop(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self._ping()
            except Exception as exc:  # noqa: BLE001 - any failure means the session, and the lock, may be gone
                self._lost = type(exc).__name__
                return

    def verify(self, conn: Any) -> None:
        """The lock lives as long as its session: a dead session means another may hold it."""
        if self._lost is None:
            try:
                self._ping()
            except Exception as exc:  # noqa: BLE001 - any failure means the session is gone
                self._lost = type(exc).__name__
        if self._lost is not None:
            raise LeaseLost(f"the lock's database session was lost ({self._lost})")

    def check(self) -> None:
        """Raise LeaseLost when the kernel has already given up on the lock session's connection (a local
        look, no round trip: before each batch and each retry of one, a host cut off from the server stops
        retrying once its lock session is known dead instead of spending the whole retry budget)."""
        if self._lost is None:
            self._lost = _connection_dead(self._conn)
        if self._lost is not None:
            raise LeaseLost(f"the lock's database session was lost ({self._lost})")

    def release(self) -> None:
        self._stop.set()
        if self._pinger is not None and self._pinger is not threading.current_thread():
            self._pinger.join()
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


def _connection_dead(conn: Any) -> str | None:
    """Why this connection is known dead without talking to its server, or None: closed by the driver, or
    its TCP socket no longer established (keepalive probes unanswered, data unacknowledged for
    tcp_user_timeout). Sockets that are not TCP (a Unix socket) are taken as alive."""
    import socket

    try:
        raw = conn.connection.dbapi_connection if conn is not None else None
    except Exception:  # noqa: BLE001 - an invalidated or closed SQLAlchemy connection
        return "closed"
    if raw is None:
        return "closed"
    sock: Any = getattr(raw, "_sock", False)  # PyMySQL: None once it closed the socket after a timeout
    if sock is None:
        return "closed"
    try:
        fd = sock.fileno() if sock else raw.fileno()  # psycopg
        probe = socket.socket(fileno=os.dup(fd))
    except Exception:  # noqa: BLE001 - psycopg raises once its connection is closed
        return "closed"
    try:
        state = probe.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    except OSError:
        return None
    finally:
        probe.close()  # the duplicate only
    return None if state == _TCP_ESTABLISHED else "its TCP connection is closed"


def take_session_lock(engine: Any, acquire_sql: str, release_sql: str, params: dict,
                      ping_every: float | None = None) -> _SessionHeld | None:
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
    return _SessionHeld(conn, release_sql, params, ping_every)


class PostgresLockBackend:
    name = "postgres"
    crash_bound = ("0 s when the process dies (the server ends its session); half of [locks] host_loss_bound "
                   "(30 s by default) if the host is lost")

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def try_acquire(self, job: str, ttl: timedelta) -> _SessionHeld | None:
        return take_session_lock(self.engine, "SELECT pg_try_advisory_lock(:key)", "SELECT pg_advisory_unlock(:key)",
                                 {"key": advisory_key(job)})

    def unlock(self, job: str, ttl: timedelta) -> Unlocked:
        """The server ends a dead holder's session and its lock with it: nothing is ever stale."""
        return probe_unlock(self, job, ttl)
