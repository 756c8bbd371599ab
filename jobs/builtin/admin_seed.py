"""Create the administrator account when no administrator exists; never touch an existing one.

The password comes only from CRONWARDEN_ADMIN_PASSWORD or its _FILE twin and
is checked by `validate`, which the runner calls only for this job: a missing
password fails `admin-seed` with exit 78 and leaves `list` and the other jobs
alone. It is hashed with argon2id outside the transaction (a quarter second
of CPU) and only the hash reaches the database. Two seeds at once create one
administrator: the job lock lets one through, and should two ever run (a lock
backend not shared between them), the insert re-checks inside its
transaction and the username's unique constraint refuses the second row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cronwarden import ConfigError, JobSpec, PermanentError, Secret, identifier, setting

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see jobs/__init__.py)
if TYPE_CHECKING:
    from typing import Any

    from cronwarden import JobContext

MIN_PASSWORD_LENGTH = 12
PASSWORD_ENV = "CRONWARDEN_ADMIN_PASSWORD"
_COLUMNS = ("username", "email", "password_hash", "is_admin")


def _username(value: str) -> str | None:
    if not value.strip() or len(value) > 150:
        return f"must be 1 to 150 characters, got {len(value)}"
    return None


def _email(value: str) -> str | None:
    local, at, domain = value.partition("@")
    if not (local and at and domain) or any(c.isspace() for c in value) or len(value) > 255:
        return f"not an email address: {value!r}"
    return None


@dataclass(frozen=True)
class Settings:
    """The job's own keys, in `[jobs.admin-seed]`."""

    username: str = setting("admin", check=_username, help="The administrator's username.")
    email: str = setting("admin@example.com", check=_email, help="The administrator's email address.")
    password: Secret = setting(Secret(""), env=PASSWORD_ENV,
                               help=f"From {PASSWORD_ENV} or {PASSWORD_ENV}_FILE only; "
                                    f"at least {MIN_PASSWORD_LENGTH} characters.")
    table: str = setting("users", check=identifier,
                         help="The users table (columns username, email, password_hash, is_admin, created_at).")


def validate(s: Settings) -> None:
    """The password matters only when this job runs, so it is checked here and not at config load."""
    length = len(s.password.reveal())
    if length == 0:
        raise ConfigError(f"[jobs.admin-seed] password: not set; set {PASSWORD_ENV} or {PASSWORD_ENV}_FILE")
    if length < MIN_PASSWORD_LENGTH:
        raise ConfigError(f"[jobs.admin-seed] password ({PASSWORD_ENV}): must be at least "
                          f"{MIN_PASSWORD_LENGTH} characters, got {length}")


def run(ctx: JobContext, s: Settings) -> None:
    from cronwarden import ref

    users = ref(s.table, times=("created_at",), others=_COLUMNS)
    ctx.count("created", 0)
    present = ctx.in_transaction(_present, users, s.username)
    if ctx.dry_run:
        ctx.count("created", 0 if present else 1)
        ctx.detail(f"an administrator already exists ({present}): nothing to create" if present
                   else f"would create the administrator {s.username!r} <{s.email}>")
        return
    if present:
        ctx.detail(f"an administrator already exists ({present}): nothing created")
        return
    from argon2 import PasswordHasher
    from sqlalchemy.exc import IntegrityError

    password_hash = PasswordHasher().hash(s.password.reveal())
    try:
        present = ctx.in_transaction(_create, users, s, password_hash, ctx.now)
    except IntegrityError:
        present = ctx.in_transaction(_present, users, s.username)
        if not present:
            raise PermanentError(f"could not create the administrator {s.username!r}: "
                                 f"a constraint of {s.table} refused the row") from None
    if present:
        ctx.detail(f"an administrator already exists ({present}): nothing created")
        return
    ctx.count("created", 1)
    ctx.detail(f"created the administrator {s.username!r} <{s.email}>")
    ctx.log.info("created the administrator %r", s.username)


def _present(conn: Any, users: Any, username: str) -> str | None:
    """What already stands in the way: an administrator (by name), else None.

    A non-administrator holding the username is an error, never promoted.
    """
    from sqlalchemy import exists, select

    admin = conn.execute(select(users.c.username).where(users.c.is_admin == True).limit(1)).scalar()  # noqa: E712
    if admin is not None:
        return f"username {admin!r}"
    if conn.execute(select(exists().where(users.c.username == username))).scalar():
        raise PermanentError(f"username {username!r} belongs to a user who is not an administrator; "
                             f"choose another [jobs.admin-seed] username (existing users are never changed)")
    return None


def _create(conn: Any, users: Any, s: Settings, password_hash: str, now: datetime) -> str | None:
    """Insert the administrator unless one appeared meanwhile (re-checked in this transaction)."""
    from sqlalchemy import insert

    present = _present(conn, users, s.username)
    if present:
        return present
    conn.execute(insert(users).values(username=s.username, email=s.email, password_hash=password_hash,
                                      is_admin=True, created_at=now))
    return None


JOB = JobSpec(
    name="admin-seed",
    run=run,
    settings=Settings,
    schedule="once",
    description="Create the administrator account if no administrator exists (never changes an existing one).",
    validate=validate,
    needs=lambda s: {s.table: (*_COLUMNS, "created_at")},
)
