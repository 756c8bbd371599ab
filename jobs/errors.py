"""The error tree and the one place that decides what is worth retrying."""

from __future__ import annotations

import errno
from enum import Enum


class CronwardenError(Exception):
    """Base of the errors the tool raises on purpose, each with a clear message."""


class ConfigError(CronwardenError):
    """Invalid configuration: exit 78 before anything is touched."""


class UsageError(CronwardenError):
    """A bad command-line argument: exit 2."""


class DatabaseUnavailable(CronwardenError):
    """The database did not answer within the retry budget: exit 75."""


class LeaseLost(CronwardenError):
    """Another process took the lease: the batch in flight must roll back."""


class TimedOut(CronwardenError):
    """The job's timeout passed; raised at a batch boundary."""


class TransientError(CronwardenError):
    """Raised by a job for a failure worth retrying (in-process, then by backoff)."""


class PermanentError(CronwardenError):
    """Raised by a job for a failure that retrying cannot fix."""


class Interrupted(BaseException):
    """SIGTERM/SIGINT: outside Exception so a job's `except Exception` cannot swallow it."""

    def __init__(self, signum: int) -> None:
        import signal  # here, not at the top: its import (enums of every signal) would cost each tick

        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


class Kind(str, Enum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"


_PG_TRANSIENT_PREFIXES = ("08", "40", "53", "57P")
_PG_TRANSIENT_CODES = {"55P03", "57014"}
_MYSQL_TRANSIENT = {1205, 1213, 1040, 1053, 1158, 1159, 1160, 1161, 1927, 2002, 2003, 2005, 2006, 2013, 2055, 4031,
                    1969, 3024}  # statement timeouts: MariaDB max_statement_time, MySQL max_execution_time
_NETWORK_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EHOSTDOWN, errno.ENETDOWN, errno.ENETRESET,
                   errno.ECONNRESET, errno.ECONNABORTED, errno.ECONNREFUSED, errno.ETIMEDOUT, errno.EPIPE}
_SQLITE_TRANSIENT = ("database is locked", "database is busy", "database table is locked")


def classify(exc: BaseException) -> Kind:
    """Decide once, for every layer, whether an error is worth retrying."""
    if isinstance(exc, TransientError):
        return Kind.TRANSIENT
    if isinstance(exc, (PermanentError, ConfigError, LeaseLost, TimedOut)):
        return Kind.PERMANENT
    if _is_transient_db_error(exc) or _is_transient_smtp_error(exc):
        return Kind.TRANSIENT
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return Kind.TRANSIENT
    if isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS:  # unreachable network or host, host down
        return Kind.TRANSIENT
    return Kind.PERMANENT


def is_transient(exc: BaseException) -> bool:
    return classify(exc) is Kind.TRANSIENT


_MYSQL_LOCK_WAITS = {1205, 1213}
_PG_LOCK_WAITS = {"40P01", "55P03", "40001"}


def is_lock_wait(exc: BaseException) -> bool:
    """The database answered that rows or the file stayed locked (a lock wait or deadlock it timed itself):
    unlike a silent peer's, such a wait is worth one more attempt even when it used up [retry] max_time."""
    try:
        from sqlalchemy import exc as sa_exc
    except ImportError:  # pragma: no cover - sqlalchemy is a dependency
        return False
    if not isinstance(exc, sa_exc.DBAPIError) or exc.connection_invalidated:
        return False
    args = getattr(exc.orig, "args", ())
    if args and isinstance(args[0], int):
        return args[0] in _MYSQL_LOCK_WAITS
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if code:
        return code in _PG_LOCK_WAITS
    return any(marker in str(exc.orig).lower() for marker in _SQLITE_TRANSIENT)


def _is_transient_db_error(exc: BaseException) -> bool:
    try:
        from sqlalchemy import exc as sa_exc
    except ImportError:  # pragma: no cover - sqlalchemy is a dependency
        return False
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):  # MySQL/MariaDB error number (PyMySQL also sets a generic sqlstate)
        return args[0] in _MYSQL_TRANSIENT
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code:
        return code in _PG_TRANSIENT_CODES or code.startswith(_PG_TRANSIENT_PREFIXES)
    text = str(orig).lower()
    if any(marker in text for marker in _SQLITE_TRANSIENT):
        return True
    return isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)) and _looks_like_connection(text)


def _looks_like_connection(text: str) -> bool:
    return any(
        marker in text
        for marker in ("connection refused", "could not connect", "server closed", "connection timed out",
                       "can't connect", "lost connection", "gone away", "connection reset", "timeout expired",
                       # the network below: a host without a route, a peer that vanished (libpq's texts)
                       "network is unreachable", "network is down", "no route to host", "host is down",
                       "host is unreachable", "timed out", "broken pipe", "connection aborted",
                       # PostgreSQL refusing a connection while it stops, starts or recovers (57P03) or is
                       # full (53300): libpq reports these at connect time without a SQLSTATE.
                       "the database system is", "not yet accepting connections", "too many clients")
    )


def _is_transient_smtp_error(exc: BaseException) -> bool:
    import smtplib

    if isinstance(exc, (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError)):
        return True
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(400 <= code < 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    return False


def one_line(exc: BaseException) -> str:
    """A single line describing an error, with secrets masked."""
    from .secrets import redact

    if isinstance(exc, (CronwardenError, Interrupted)):
        text = str(exc)
    else:
        orig = getattr(exc, "orig", None)
        text = f"{type(orig or exc).__name__}: {orig if orig is not None else exc}"
    text = " ".join(text.split())
    if not text.isprintable():  # NUL and other controls: no database stores NUL in text, no terminal shows them
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if len(text) > 500:
        text = text[:497] + "..."
    return redact(text)
