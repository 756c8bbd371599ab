"""Delete refresh tokens that expired more than `retention_days` ago, in short transactions.

A batched delete costs the pages it dirties more than the rows it removes. When many
expired rows are spread over the table, batches taken in expires_at order would each
dirty a fresh set of table pages, so the job sweeps the table in physical order and
filters on expires_at instead:
- SQLite: rowid ranges, so each table page is rewritten once per run. The page cache
  is larger (SQLITE_CACHE_KIB, for the rest of the invocation), so no batch spills
  pages; JobContext checkpoints the WAL between batches, never inside a COMMIT.
- PostgreSQL: ctid block ranges. A DELETE leaves index entries alone, so each heap
  page is read and dirtied once. Batches commit asynchronously: a crash loses at most
  the last few, which the next run deletes again.
A sweep batch stops at its row budget or after scanning SCAN_FACTOR times as many rows,
so sparse tables keep transactions short too. With few expired rows (or, as the
PostgreSQL planner sees it, rows stored in expiry order) and on MySQL, batches are
taken in (expires_at, key_column) order instead, so a million tokens sharing one
expiry time still go `batch_size` rows at a time (jobs.batches). Batches start at
FIRST_BATCH rows, grow up to `batch_size` while they take less than TARGET_SECONDS
and shrink when one takes more. No row is ever loaded into Python; rows the
application deletes meanwhile only make a batch smaller.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cronwarden import JobSpec, identifier, setting

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see jobs/__init__.py)
if TYPE_CHECKING:
    from typing import Any

    from sqlalchemy.engine import Connection
    from sqlalchemy.sql.expression import ColumnElement, TableClause

    from cronwarden import JobContext

TARGET_SECONDS = (0.1, 0.2)  # a batch faster than this range lets the next one grow, a slower one shrinks it
FIRST_BATCH = 5_000  # rows at most in the first batch, which also reads cold pages; later ones grow from it
SCAN_FACTOR = 8  # a sweep batch scans at most this many rows per row it may delete
FILL = 0.9  # PostgreSQL: a block window is sized to hold this share of the rows the batch still needs
SQLITE_CACHE_KIB = 65_536  # page cache during a batch (SQLite's default is 2 MiB): a batch's dirty index pages
POSTGRES_ROWS_PER_BLOCK = 50  # assumed when the table has never been analyzed


@dataclass(frozen=True)
class Settings:
    """The job's own keys, in `[jobs.refresh-token-cleanup]`."""

    retention_days: int = setting(7, min=1, max=36500, cli=True, help="Delete tokens expired longer ago than this.")
    batch_size: int = setting(10_000, min=1, max=1_000_000, cli=True, help="Rows per transaction (at most).")
    table: str = setting("refresh_tokens", check=identifier, help="The refresh-token table.")
    expires_column: str = setting("expires_at", check=identifier, help="Its expiry timestamp column (UTC).")
    key_column: str = setting("id", check=identifier,
                              help="Its primary key: the order among tokens that expire at the same time.")


class _Where:
    """Where the next batch starts; replaced only once a batch has committed, so a retried one starts over.

    expiry: `after` is the last (expires_at, key) deleted (jobs.batches.After).
    rowid: `after` is the last rowid scanned, `end` the largest rowid when the sweep began.
    block: `after` is the (block, offset) to start at, `end` the table's blocks, `per_block` its rows
    per block, `density` the expired rows per block seen last.
    A plain class, not a dataclass: this module is imported by every tick, and a dataclass is compiled
    when it is created.
    """

    __slots__ = ("order", "after", "end", "per_block", "density")

    def __init__(self, order: str = "undecided", after: Any = None, end: int = 0,
                 per_block: float = POSTGRES_ROWS_PER_BLOCK, density: float = POSTGRES_ROWS_PER_BLOCK) -> None:
        self.order, self.after, self.end, self.per_block, self.density = order, after, end, per_block, density

    def moved(self, after: Any, density: float | None = None) -> _Where:
        """The same sweep, starting at `after` (with the density seen last, when given)."""
        return _Where(self.order, after, self.end, self.per_block, self.density if density is None else density)


def run(ctx: JobContext, s: Settings) -> None:
    from sqlalchemy import func, select

    from cronwarden import BatchSize, ref

    tokens = ref(s.table, times=(s.expires_column,))
    expires = tokens.c[s.expires_column]
    cutoff = ctx.cutoff(s.retention_days)
    if ctx.dry_run:
        n = ctx.in_transaction(lambda conn: conn.execute(
            select(func.count()).select_from(tokens).where(expires < cutoff)).scalar())
        ctx.count("deleted", n)
        ctx.detail(f"would delete {n} refresh tokens expired before {cutoff.isoformat()}")
        return
    ctx.count("deleted", 0)
    where: _Where | None = _Where()
    size = BatchSize(s.batch_size, FIRST_BATCH, TARGET_SECONDS)
    while where is not None:
        deleted, where = ctx.in_transaction(_delete_batch, s, cutoff, size.rows, where,
                                            tally=lambda result: {"deleted": result[0]})
        size.after(ctx.last_transaction)


def _delete_batch(conn: Connection, s: Settings, cutoff: datetime, size: int,
                  where: _Where) -> tuple[int, _Where | None]:
    """Delete at most `size` expired rows; returns (deleted, where the next batch starts, or None when done)."""
    from cronwarden import oldest_first, ref

    dialect = conn.dialect.name
    keys = {"sqlite": ("rowid",), "postgresql": ("ctid",)}.get(dialect, ())
    tokens = ref(s.table, times=(s.expires_column,), others=(s.key_column, *keys))
    expires = tokens.c[s.expires_column]
    if dialect == "sqlite":
        conn.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
    elif dialect == "postgresql":
        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
    if where.order == "undecided":
        where = _choose_order(conn, tokens, expires, cutoff)
    if dialect == "sqlite" and where.order == "expiry":
        size = min(size, SQLITE_CACHE_KIB // 8)  # a row may dirty a table page and an index page: no spilling
    if where.order == "expiry":
        deleted, after = oldest_first(conn, tokens, expires, tokens.c[s.key_column], cutoff, size, where.after)
        return deleted, None if after is None else where.moved(after)
    step = _by_rowid if where.order == "rowid" else _by_block
    return step(conn, tokens, expires, cutoff, size, where)


def _choose_order(conn: Connection, tokens: TableClause, expires: ColumnElement, cutoff: datetime) -> _Where:
    """SQLite: sweep in rowid order when there are at least as many expired rows as pages in the file."""
    from sqlalchemy import func, literal, select

    dialect = conn.dialect.name
    if dialect == "sqlite":
        pages = max(1, conn.exec_driver_sql("PRAGMA page_count").scalar() or 0)
        capped = select(literal(1)).where(expires < cutoff).limit(pages).subquery()
        if conn.execute(select(func.count()).select_from(capped)).scalar_one() < pages:
            return _Where("expiry")
        end = conn.execute(select(func.max(tokens.c.rowid))).scalar() or 0
        return _Where("rowid", after=0, end=end)
    if dialect == "postgresql":
        return _postgres_order(conn, tokens, expires, cutoff)
    return _Where("expiry")


def _postgres_order(conn: Connection, tokens: TableClause, expires: ColumnElement, cutoff: datetime) -> _Where:
    """Sweep unless the rows are few or stored in expiry order (the planner's plan, the column's correlation).

    Expiry-ordered batches on rows that are neither would walk the index through heap pages that earlier
    batches left not all-visible, and revisit each page once per batch that has a row in it.
    """
    import json

    from sqlalchemy import bindparam, text

    prep = conn.dialect.identifier_preparer
    name = prep.format_table(tokens)
    blocks, per_block = conn.execute(text(
        "SELECT pg_relation_size(c.oid) / current_setting('block_size')::int, c.reltuples / greatest(c.relpages, 1) "
        "FROM pg_class c WHERE c.oid = CAST(:t AS regclass)"), {"t": name}).one()
    explain = text(f"EXPLAIN (FORMAT JSON) SELECT ctid FROM {name} WHERE {prep.quote(expires.name)} < :cutoff")
    plan = conn.execute(explain.bindparams(bindparam("cutoff", cutoff, type_=expires.type))).scalar_one()
    node = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
    while "Scan" not in node["Node Type"] and node.get("Plans"):
        node = node["Plans"][0]
    kind, rows = node["Node Type"], node.get("Plan Rows", 0)
    stats = conn.execute(text(
        "SELECT correlation, n_distinct FROM pg_stats WHERE schemaname = coalesce(:s, current_schema()) "
        "AND tablename = :t AND attname = :c"), {"s": tokens.schema, "t": tokens.name, "c": expires.name}).first()
    # One expiry for every row (everyone logged out at once) correlates trivially: no order to follow there.
    in_order = stats is not None and stats[0] is not None and abs(stats[0]) >= 0.9 and stats[1] != 1
    if in_order or kind in ("Index Scan", "Index Only Scan") or (kind == "Bitmap Heap Scan" and rows * 2 < blocks):
        return _Where("expiry")
    per_block = per_block if per_block and per_block > 0 else POSTGRES_ROWS_PER_BLOCK
    return _Where("block", after=(0, 0), end=int(blocks), per_block=per_block, density=per_block)


def _by_rowid(conn: Connection, tokens: TableClause, expires: ColumnElement, cutoff: datetime, size: int,
              where: _Where) -> tuple[int, _Where | None]:
    from sqlalchemy import delete, literal, select
    from sqlalchemy.sql import operators
    from sqlalchemy.sql.elements import UnaryExpression

    rowid = tokens.c.rowid
    # `+expires_at` keeps the planner on the rowid range: through the index it would lose the physical order.
    unindexed = UnaryExpression(expires, operator=operators.custom_op("+"), type_=expires.type)
    end = where.after + SCAN_FACTOR * size
    live = [rowid > where.after, unindexed < cutoff] + ([rowid <= end] if end < where.end else [])
    last = conn.execute(select(rowid).where(*live).order_by(rowid).offset(size - 1).limit(1)).scalar()
    if last is None:
        deleted = conn.execute(delete(tokens).where(*live)).rowcount
        if end >= where.end:
            return deleted, None
        last = end
    else:
        deleted = conn.execute(delete(tokens).where(*live, rowid <= last)).rowcount
    # Rows stored in expiry order (rowids follow creation) are all gone long before the sweep ends.
    more = conn.execute(select(literal(1)).where(expires < cutoff).limit(1)).first() is not None
    return deleted, where.moved(last) if more else None


def _by_block(conn: Connection, tokens: TableClause, expires: ColumnElement, cutoff: datetime, size: int,
              where: _Where) -> tuple[int, _Where | None]:
    """The next expired rows in ctid order, one window of blocks per DELETE, up to the batch's scan budget.

    A window is sized from the density seen so far to hold FILL of what the batch still needs; one that
    holds more rolls back to its savepoint and is deleted only up to the row that fills the batch.
    """
    from sqlalchemy import delete, select

    ctid = tokens.c.ctid
    budget = max(1, round(SCAN_FACTOR * size / where.per_block))
    density, deleted, scanned = where.density, 0, 0
    block, offset = where.after
    while True:
        need = size - deleted
        width = min(budget, max(1, round(need * FILL / density)))
        end = block + width
        window = [ctid >= _tid(block, offset)] + ([ctid < _tid(end, 0)] if end < where.end else [])
        savepoint = conn.begin_nested()
        n = conn.execute(delete(tokens).where(*window, expires < cutoff)).rowcount
        if n > need:
            savepoint.rollback()
            last = conn.execute(select(ctid).where(*window, expires < cutoff).order_by(ctid)
                                .offset(need - 1).limit(1)).scalar()
            if last is None:  # the application deleted rows of this window since: fewer than `need` left
                deleted += conn.execute(delete(tokens).where(*window, expires < cutoff)).rowcount
                if end >= where.end:
                    return deleted, None
                return deleted, where.moved((end, 0), n / width)
            last_block, last_offset = (int(x) for x in last.strip("()").split(","))
            deleted += conn.execute(delete(tokens).where(
                ctid >= _tid(block, offset), ctid <= _tid(last_block, last_offset), expires < cutoff)).rowcount
            return deleted, where.moved((last_block, last_offset + 1), n / width)
        savepoint.commit()
        deleted, scanned = deleted + n, scanned + width
        if end >= where.end:
            return deleted, None
        # Sparser than thought: the next window is wider (at most twice), denser: narrower.
        density = max(n / width, density / 2)
        block, offset = end, 0
        if deleted >= size * FILL or scanned >= budget:
            return deleted, where.moved((block, offset), density)


def _tid(block: int, offset: int) -> ColumnElement:
    from sqlalchemy import literal_column

    return literal_column(f"'({int(block)},{int(offset)})'::tid")


JOB = JobSpec(
    name="refresh-token-cleanup",
    run=run,
    settings=Settings,
    schedule="24h",
    description="Delete refresh tokens expired longer than retention_days ago.",
    needs=lambda s: {s.table: (s.expires_column,)},
)
