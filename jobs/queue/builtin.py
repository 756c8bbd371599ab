"""Built-in one-off jobs: a user's right to erasure, and the export of their data that may precede it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from ..app_tables import ref
from ..batches import BatchSize, by_key
from ..checks import identifier
from ..context import JobContext
from ..errors import PermanentError
from ..files import atomic_write
from ..settings import setting
from . import TaskSpec

ERASE_TARGET_SECONDS = (0.1, 0.2)  # a token batch faster than this lets the next one grow, a slower one shrinks it
ERASE_FIRST_BATCH = 1_000


@dataclass(frozen=True)
class EraseArgs:
    user_id: int = setting(min=1, help="The user to erase.")
    users_table: str = setting("users", check=identifier, help="The users table.")
    tokens_table: str = setting("refresh_tokens", check=identifier, help="The refresh-token table.")
    tokens_key_column: str = setting("id", check=identifier, help="The refresh-token table's primary key.")
    batch_size: int = setting(10_000, min=1, max=1_000_000, help="Tokens deleted per transaction (at most).")


def erased_values(user_id: int) -> dict[str, Any]:
    """The rewrite of personal fields; it doubles as the erasure marker (the default schema has no erased_at)."""
    return {"email": f"erased-{user_id}@invalid", "username": f"erased-{user_id}", "password_hash": "!",
            "last_login_ip": None}


def erase_user(ctx: JobContext, a: EraseArgs) -> None:
    """The user's tokens go at most batch_size per transaction, in key order; the transaction that
    deletes the last of them rewrites the user's row (a user with few tokens: one transaction)."""
    users = ref(a.users_table, others=("id", "email", "username", "password_hash", "last_login_ip"))
    tokens = ref(a.tokens_table, others=("user_id", a.tokens_key_column))

    def erase(conn: Any, *, size: int, after: Any) -> tuple[int, int, Any]:
        deleted, last = by_key(conn, tokens, tokens.c[a.tokens_key_column], size, after,
                               where=[tokens.c.user_id == a.user_id])
        if last is not None:
            return deleted, 0, last
        rewritten = conn.execute(update(users).where(users.c.id == a.user_id).values(**erased_values(a.user_id)))
        return deleted, rewritten.rowcount, None

    ctx.count("tokens_deleted", 0)
    ctx.count("users_erased", 0)
    size = BatchSize(a.batch_size, ERASE_FIRST_BATCH, ERASE_TARGET_SECONDS)
    _, erased, _ = ctx.in_batches(erase, size, tally=lambda r: {"tokens_deleted": r[0], "users_erased": r[1]})
    if not erased:
        ctx.detail(f"no user {a.user_id} in {a.users_table}: nothing to erase")


@dataclass(frozen=True)
class ExportArgs:
    user_id: int = setting(min=1, help="The user to export.")
    to: Path = setting(help="Directory that receives user-<id>.json.")
    users_table: str = setting("users", check=identifier, help="The users table.")
    tokens_table: str = setting("refresh_tokens", check=identifier, help="The refresh-token table.")


_NEVER_EXPORTED = {"password_hash", "token_hash"}


def export_user(ctx: JobContext, a: ExportArgs) -> None:
    def read(conn: Any) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        from sqlalchemy import MetaData, Table

        schema_u, _, name_u = a.users_table.rpartition(".")
        schema_t, _, name_t = a.tokens_table.rpartition(".")
        users = Table(name_u, MetaData(), autoload_with=conn, schema=schema_u or None)
        tokens = Table(name_t, MetaData(), autoload_with=conn, schema=schema_t or None)
        user = conn.execute(select(*[c for c in users.c if c.name not in _NEVER_EXPORTED])
                            .where(users.c.id == a.user_id)).mappings().first()
        rows = conn.execute(select(*[c for c in tokens.c if c.name not in _NEVER_EXPORTED])
                            .where(tokens.c.user_id == a.user_id).order_by(tokens.c.id)).mappings().all()
        return (None if user is None else dict(user)), [dict(r) for r in rows]

    user, tokens = ctx.in_transaction(read)
    if user is None:
        raise PermanentError(f"no user {a.user_id} in {a.users_table}")
    document = {"user": _plain(user), "refresh_tokens": [_plain(t) for t in tokens],
                "exported_at": ctx.now.isoformat()}
    target = a.to / f"user-{a.user_id}.json"
    ctx.checkpoint()
    _write_atomically(target, json.dumps(document, indent=2, sort_keys=True) + "\n")
    ctx.count("tokens_exported", len(tokens))
    ctx.count("users_exported", 1)
    ctx.detail(f"wrote {target}")


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    def value(v: Any) -> Any:
        if isinstance(v, datetime):
            return (v if v.tzinfo else v.replace(tzinfo=timezone.utc)).isoformat()
        if isinstance(v, date):
            return v.isoformat()
        if isinstance(v, bytes):
            return v.hex()
        return v

    return {k: value(v) for k, v in row.items()}


def _write_atomically(target: Path, text: str) -> None:
    """Readers see the old file or the whole new one, never a half-written export."""
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, text)


ERASE_USER = TaskSpec(name="erase-user", run=erase_user, args=EraseArgs,
                      description="Right to erasure: delete the user's tokens, rewrite their personal fields")
EXPORT_USER = TaskSpec(name="export-user", run=export_user, args=ExportArgs,
                       description="Write the user's row and token metadata as JSON to <to>/user-<id>.json")
BUILTIN_TASKS: tuple[TaskSpec, ...] = (ERASE_USER, EXPORT_USER)
