"""Set users' last login IP to NULL once their last login is older than `retention_days` (GDPR).

The job sweeps the users table in primary-key ranges: each batch finds, in
the database, the key `size` rows further on, then anonymizes the rows of
that range whose last login is at or before the cutoff. One short
transaction per batch, no row loaded into Python, every row examined once
per run.

Why key ranges and not last-login ranges: login times are scattered over the
table (users log in whenever they like), so a batch taken in last_login_at
order rewrites a fresh set of table pages each time, and most pages many
times over a run (measured: 5x a single UPDATE on SQLite). Key order is the
physical order on SQLite (rowid) and MySQL (clustered primary key) and close
to it on PostgreSQL, so each page is rewritten at most once, which makes the
sweep as fast as one UPDATE of the whole table (benchmarks/ip_anonymization.py).

Batches start at START_ROWS rows and adapt: halved towards TARGET_SECONDS when
a transaction takes longer, doubled up to `batch_size` while they are quick,
so no transaction holds row locks for long on any database. Ranges never
depend on what earlier batches changed, so a dry run (which counts instead
of updating) reports the very same total.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cronwarden import JobSpec, identifier, setting

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see jobs/__init__.py)
if TYPE_CHECKING:
    from typing import Any

    from cronwarden import JobContext

START_ROWS = 1_000
TARGET_SECONDS = 0.04


@dataclass(frozen=True)
class Settings:
    """The job's own keys, in `[jobs.ip-anonymization]`."""

    retention_days: int = setting(90, min=1, max=36500, cli=True,
                                  help="Anonymize IPs of users whose last login is older than this.")
    batch_size: int = setting(10_000, min=1, max=1_000_000, cli=True,
                              help="Most rows examined per transaction (fewer while transactions are slow).")
    table: str = setting("users", check=identifier, help="The users table.")
    ip_column: str = setting("last_login_ip", check=identifier, help="The column set to NULL.")
    login_column: str = setting("last_login_at", check=identifier, help="The last-login timestamp column (UTC).")
    key_column: str = setting("id", check=identifier, help="The table's primary key (the sweep's order).")


def run(ctx: JobContext, s: Settings) -> None:
    from cronwarden import BatchSize, ref

    users = ref(s.table, times=(s.login_column,), others=(s.ip_column, s.key_column))
    cutoff = ctx.cutoff(s.retention_days)
    size = BatchSize(s.batch_size, START_ROWS, (TARGET_SECONDS / 2, TARGET_SECONDS))
    ctx.count("anonymized", 0)
    ctx.in_batches(_batch, size, users, s, cutoff, ctx.dry_run, tally=lambda result: {"anonymized": result[0]})
    if ctx.dry_run:
        ctx.detail(f"would anonymize the last login IP of {ctx.counts['anonymized']} users "
                   f"whose last login is at or before {cutoff.isoformat()}")


def _batch(conn: Any, users: Any, s: Settings, cutoff: datetime, dry_run: bool, *, size: int,
           after: Any) -> tuple[int, Any]:
    """Anonymize (or count) the rows due in the next key range of `size` rows; returns (rows, last key or None)."""
    from sqlalchemy import func, select, update

    key, login, ip = users.c[s.key_column], users.c[s.login_column], users.c[s.ip_column]
    in_range = [key > after] if after is not None else []
    boundary = conn.execute(select(key).where(*in_range).order_by(key).offset(size - 1).limit(1)).scalar()
    if boundary is not None:
        in_range.append(key <= boundary)
    due = [*in_range, login <= cutoff, ip.is_not(None)]
    if dry_run:
        changed = conn.execute(select(func.count()).select_from(users).where(*due)).scalar()
    else:
        changed = conn.execute(update(users).where(*due).values({s.ip_column: None})).rowcount
    return changed, boundary


JOB = JobSpec(
    name="ip-anonymization",
    run=run,
    settings=Settings,
    schedule="7d",
    description="Set users' last login IP to NULL when their last login is older than retention_days.",
    needs=lambda s: {s.table: (s.key_column, s.login_column, s.ip_column)},
)
