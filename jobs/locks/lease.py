"""ShedLock-style lease row, timed by the database server's clock.

Taken with one atomic statement (INSERT, else UPDATE ... WHERE lock_until <=
server now), renewed every TTL/2 by a thread with its own connection, and
checked for ownership inside each batch's transaction before it commits.
Works on any database and through connection poolers (no session state).
Bound: a SIGKILLed holder keeps the job at most one TTL after its last renewal.

A holder that cannot renew (its host partitioned, its database unreachable)
steps down on its own: it trusts the lease only until `start of the last
successful renewal + TTL - margin` on its monotonic clock, and commits nothing
after that, so it never overlaps with a host that takes the expired lease even
while it still runs (River's leader-election trust window).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

from ..errors import LeaseLost
from . import Unlock, Unlocked, owner_id

log = logging.getLogger("cronwarden.lock")


def server_now(dialect: str) -> str:
    """SQL for the database server's current UTC time, in the UTCDateTime storage form."""
    if dialect == "postgresql":
        return "(clock_timestamp() AT TIME ZONE 'UTC')"
    if dialect == "mysql":
        return "UTC_TIMESTAMP(6)"
    return "(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')"


def server_now_plus(dialect: str) -> str:
    """SQL for server now + :ttl_us microseconds."""
    if dialect == "postgresql":
        return "(clock_timestamp() AT TIME ZONE 'UTC' + make_interval(secs => :ttl_us / 1000000.0))"
    if dialect == "mysql":
        return "DATE_ADD(UTC_TIMESTAMP(6), INTERVAL :ttl_us MICROSECOND)"
    return "(strftime('%Y-%m-%d %H:%M:%f', 'now', '+' || (:ttl_us / 1000000.0) || ' seconds') || '000')"


def trust_margin(ttl: timedelta) -> float:
    """Seconds before the lease's end at which a holder that could not renew stops committing: a
    fifth of the TTL covers a commit in flight and the drift between the host's and the server's clocks."""
    return ttl.total_seconds() / 5


class _Lease:
    def __init__(self, backend: LeaseLockBackend, job: str, token: str, ttl: timedelta, asked: float) -> None:
        self._backend = backend
        self.job = job
        self.token = token
        self.ttl = ttl
        self.lost = False
        self._trust_seconds = ttl.total_seconds() - trust_margin(ttl)
        # The server set lock_until = its now + TTL after `asked`: trusting from `asked` is never too long.
        self._trusted_until = asked + self._trust_seconds
        self._stop = threading.Event()
        self._not_renewing = threading.Event()
        self._not_renewing.set()
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease-{job}", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        interval = self.ttl.total_seconds() / 2
        while not self._stop.wait(interval):
            asked = time.monotonic()
            self._not_renewing.clear()
            try:
                if not self._backend.renew(self.job, self.token, self.ttl):
                    self.lost = True
                    log.error("lease for %s was taken by another process", self.job)
                    return
                self._trusted_until = asked + self._trust_seconds
                # Every TTL/2 from when the renewal was asked, not from when a slow one ended.
                interval = max(0.0, asked + self.ttl.total_seconds() / 2 - time.monotonic())
            except Exception as exc:  # noqa: BLE001 - retried soon, while the lease can still be trusted
                log.warning("lease renewal for %s failed: %s", self.job, type(exc).__name__)
                interval = self.ttl.total_seconds() / 10
            finally:
                self._not_renewing.set()

    def check(self) -> None:
        """Raise LeaseLost once the lease is known lost or its trust window has passed (no database call).

        Called at each batch boundary. On SQLite a renewal in flight goes first: SQLite's busy handler is not
        fair, so back-to-back batches would keep the renewal from the write lock until the lease lapsed
        under a working run."""
        if self._backend.dialect == "sqlite":
            self._not_renewing.wait(timeout=self.ttl.total_seconds() / 10)
        if self.lost:
            raise LeaseLost(f"lost the lease on {self.job}: another process may have taken it")
        if time.monotonic() >= self._trusted_until:
            self.lost = True
            log.error("stepping down from the lease on %s: not renewed for %.1f s (lease_ttl %s)", self.job,
                      self._trust_seconds, self.ttl)
            raise LeaseLost(f"stepped down from the lease on {self.job}: it could not be renewed before its "
                            f"TTL ended, so another host may take it")

    def verify(self, conn: Any) -> None:
        self.check()
        if not self._backend.owns(conn, self.job, self.token):
            self.lost = True
            raise LeaseLost(f"lost the lease on {self.job}: another process may have taken it")
        self.check()  # the ownership query itself may have waited on a slow network

    def release(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self._backend.give_back(self.job, self.token)
        except Exception as exc:  # noqa: BLE001 - the lease then expires by itself
            log.warning("could not release lease for %s (%s); it expires within its TTL", self.job,
                        type(exc).__name__)


class LeaseLockBackend:
    name = "lease"
    crash_bound = "one lease TTL ([locks] lease_ttl, default host_loss_bound / 2 = 30 s) after the last renewal"

    def __init__(self, engine: Any) -> None:
        from ..db import dialect_of

        self.engine = engine
        self.dialect = dialect_of(str(engine.url))
        self.now_sql = server_now(self.dialect)
        self.until_sql = server_now_plus(self.dialect)

    def try_acquire(self, job: str, ttl: timedelta) -> _Lease | None:
        from sqlalchemy import text
        from sqlalchemy.exc import IntegrityError

        token = uuid.uuid4().hex
        asked = time.monotonic()
        params = {"job": job, "by": owner_id(), "token": token, "ttl_us": int(ttl.total_seconds() * 1_000_000)}
        # A live lease is seen without writing: on SQLite a write would first wait for the write lock,
        # which the holder's own batch may have, so a loser would wait for the winner's batch.
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if conn.execute(text(f"SELECT 1 FROM job_leases WHERE job_name = :job AND lock_until > {self.now_sql}"),
                            {"job": job}).first() is not None:
                return None
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO job_leases (job_name, lock_until, locked_at, locked_by, token) "
                        f"VALUES (:job, {self.until_sql}, {self.now_sql}, :by, :token)"
                    ),
                    params,
                )
            return _Lease(self, job, token, ttl, asked)
        except IntegrityError:
            pass
        with self.engine.begin() as conn:
            taken = conn.execute(
                text(
                    f"UPDATE job_leases SET lock_until = {self.until_sql}, locked_at = {self.now_sql}, "
                    f"locked_by = :by, token = :token WHERE job_name = :job AND lock_until <= {self.now_sql}"
                ),
                params,
            ).rowcount
        return _Lease(self, job, token, ttl, asked) if taken == 1 else None

    def renew(self, job: str, token: str, ttl: timedelta) -> bool:
        from sqlalchemy import text

        with self.engine.begin() as conn:
            return conn.execute(
                text(f"UPDATE job_leases SET lock_until = {self.until_sql} WHERE job_name = :job AND token = :token"),
                {"job": job, "token": token, "ttl_us": int(ttl.total_seconds() * 1_000_000)},
            ).rowcount == 1

    def owns(self, conn: Any, job: str, token: str) -> bool:
        from sqlalchemy import text

        return conn.execute(
            text(f"SELECT 1 FROM job_leases WHERE job_name = :job AND token = :token AND lock_until > {self.now_sql}"),
            {"job": job, "token": token},
        ).first() is not None

    def give_back(self, job: str, token: str) -> None:
        from sqlalchemy import text

        with self.engine.begin() as conn:
            conn.execute(
                text(f"UPDATE job_leases SET lock_until = {self.now_sql} WHERE job_name = :job AND token = :token"),
                {"job": job, "token": token},
            )

    def break_lease(self, job: str) -> bool:
        """`cronwarden unlock`: end whoever's lease now; True when there was a live one."""
        from sqlalchemy import text

        with self.engine.begin() as conn:
            return conn.execute(
                text(f"UPDATE job_leases SET lock_until = {self.now_sql}, token = 'broken' "
                     f"WHERE job_name = :job AND lock_until > {self.now_sql}"),
                {"job": job},
            ).rowcount == 1

    def unlock(self, job: str, ttl: timedelta) -> Unlocked:
        """A lease outlives a dead holder until it expires: end it now."""
        return Unlocked(Unlock.BROKEN if self.break_lease(job) else Unlock.NOT_LOCKED)

    def describe(self, job: str) -> dict | None:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            row = conn.execute(
                text(f"SELECT locked_by, locked_at, lock_until, lock_until > {self.now_sql} AS live "
                     "FROM job_leases WHERE job_name = :job"),
                {"job": job},
            ).mappings().first()
        return dict(row) if row else None
