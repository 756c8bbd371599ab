"""Sample application rows for the tests (tokens around a cutoff)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, insert, select

from jobs.app_tables import default_metadata

_MD = default_metadata()
tokens = _MD.tables["refresh_tokens"]


def add_tokens(engine, now: datetime, expired: int, fresh: int, retention_days: int = 7) -> None:
    """`expired` tokens past the cutoff (each with its own expiry time) and `fresh` ones inside it."""
    cutoff = now - timedelta(days=retention_days)
    rows = [{"user_id": 1, "token_hash": f"old{i}", "expires_at": cutoff - timedelta(seconds=10 + i),
             "created_at": now - timedelta(days=60)} for i in range(expired)]
    rows += [{"user_id": 1, "token_hash": f"new{i}", "expires_at": cutoff + timedelta(seconds=60 + i),
              "created_at": now} for i in range(fresh)]
    with engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(insert(tokens), rows[start:start + 5000])


def count_tokens(engine, prefix: str) -> int:
    """Read in autocommit, so a poll never queues for SQLite's write lock behind a running job's batches."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        return conn.execute(select(func.count()).select_from(tokens)
                            .where(tokens.c.token_hash.like(prefix + "%"))).scalar()
