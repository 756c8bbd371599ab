"""Delete refresh tokens that expired more than `retention_days` ago, in index-ordered batches.

Each batch finds, in the database, the expiry time `batch_size` rows further
along the expires_at index and deletes that range: one short transaction per
batch, no row ever loaded into Python, and no batch re-walking what an
earlier one deleted (dead index entries on PostgreSQL stay behind it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select

from ..app_tables import ref
from ..context import JobContext
from ..settings import setting
from ..spec import JobSpec
from .names import identifier


@dataclass(frozen=True)
class Settings:
    retention_days: int = setting(7, min=1, max=36500, cli=True, help="Delete tokens expired longer ago than this.")
    batch_size: int = setting(10_000, min=1, max=1_000_000, cli=True, help="Rows per transaction.")
    table: str = setting("refresh_tokens", check=identifier, help="The refresh-token table.")
    expires_column: str = setting("expires_at", check=identifier, help="Its expiry timestamp column (UTC).")


def run(ctx: JobContext, s: Settings) -> None:
    tokens = ref(s.table, times=(s.expires_column,))
    expires = tokens.c[s.expires_column]
    cutoff = ctx.cutoff(s.retention_days)
    if ctx.dry_run:
        n = ctx.in_transaction(lambda conn: conn.execute(
            select(func.count()).select_from(tokens).where(expires < cutoff)).scalar())
        ctx.count("deleted", n)
        ctx.detail(f"would delete {n} refresh tokens expired before {cutoff.isoformat()}")
        return
    lower: datetime | None = None
    ctx.count("deleted", 0)
    while True:
        deleted, lower = ctx.in_transaction(_delete_batch, tokens, expires, cutoff, lower, s.batch_size)
        ctx.count("deleted", deleted)
        if lower is None:
            return


def _delete_batch(conn, tokens, expires, cutoff: datetime, lower: datetime | None, size: int):  # noqa: ANN001
    """Delete the next range of at most ~size expired rows; returns (deleted, next lower bound or None)."""
    in_range = [expires < cutoff] + ([expires > lower] if lower is not None else [])
    boundary = conn.execute(
        select(expires).where(*in_range).order_by(expires).offset(size - 1).limit(1)
    ).scalar()
    if boundary is None:
        return conn.execute(delete(tokens).where(*in_range)).rowcount, None
    return conn.execute(delete(tokens).where(*in_range, expires <= boundary)).rowcount, boundary


JOB = JobSpec(
    name="refresh-token-cleanup",
    run=run,
    settings=Settings,
    schedule="24h",
    description="Delete refresh tokens expired longer than retention_days ago.",
)
