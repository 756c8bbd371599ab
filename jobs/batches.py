"""Bounded batches whatever the data: at most `size` rows per transaction, sized towards a time target.

A batch ends at a row, never at a value. Batches taken in a column's order are keyset on
(column, key), the key being the table's primary key: a value shared by a million rows (every
token expired at the same second, a burst of log lines stored at one-second precision) is taken
`size` rows at a time in key order, so no batch ever grows with a tie. Rows whose column is NULL
are never taken (`column < bound` is not true for NULL).

The application may delete rows while a batch runs: every statement here reads or writes what
is there now, so rows gone between two statements make a batch smaller, never an error.
No row is loaded into Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.sql.expression import ColumnElement, TableClause


class BatchSize:
    """Rows for the next batch: doubles (up to `most`) while a transaction takes less than target[0],
    shrinks in proportion when one takes more than target[1]."""

    def __init__(self, most: int, first: int, target: tuple[float, float]) -> None:
        self.most = most
        self.rows = max(1, min(most, first))
        self.target = target

    def after(self, seconds: float) -> int:
        """The size of the next batch, given how long the last one took."""
        low, high = self.target
        if seconds > high:
            self.rows = max(1, int(self.rows * high / seconds))
        elif seconds < low:
            self.rows = min(self.most, self.rows * 2)
        return self.rows


@dataclass(frozen=True)
class After:
    """Where the next batch in (column, key) order starts: every row up to (value, key) is done.

    key None: every row whose column equals `value` is done too. until: the largest key of the tie on
    `value`, which bounds the walk through the rest of it.
    """

    value: Any
    key: Any = None
    until: Any = None


def oldest_first(conn: Connection, table: TableClause, column: ColumnElement, key: ColumnElement, below: Any,
                 size: int, after: After | None, *, where: Sequence[ColumnElement] = (),
                 dry_run: bool = False) -> tuple[int, After | None]:
    """Delete (or count) the next `size` rows at most whose column is below `below`, in (column, key) order.

    Returns (rows, where the next batch starts, or None when no such row is left). Each statement is one
    index range: the rest of a tie in key order (up to its largest key), the values between two
    boundaries, then the boundary's value: whole when it fits, else its first keys.
    """
    from sqlalchemy import func, literal, select

    done = 0
    if after is not None and after.key is not None:
        done, last = by_key(conn, table, key, size, after.key,
                            where=[column == after.value, key <= after.until, *where], dry_run=dry_run)
        if last is not None:
            return done, replace(after, key=last)
        after = After(after.value)
    rest = [*where] + ([column > after.value] if after is not None else [])
    boundary = conn.execute(select(column).where(column < below, *rest).order_by(column)
                            .offset(size - done - 1).limit(1)).scalar()
    if boundary is None:
        return done + _apply(conn, table, [column < below, *rest], dry_run), None
    # One upper bound only: given two, SQLite may bound its index scan by `below` and walk the rest again.
    done += _apply(conn, table, [*rest, column < boundary], dry_run)
    need, tie = max(1, size - done), [column == boundary, *where]
    # Most boundaries are not ties: a look at need + 1 rows of the value's index says whether it fits whole.
    probe = select(literal(1)).select_from(table).where(*tie).limit(need + 1).subquery()
    if conn.execute(select(func.count()).select_from(probe)).scalar_one() <= need:
        return done + _apply(conn, table, tie, dry_run), After(boundary)
    until = conn.execute(select(func.max(key)).where(*tie)).scalar()
    n, last = by_key(conn, table, key, need, None, where=[*tie, key <= until], dry_run=dry_run)
    return done + n, After(boundary, last, until)


def by_key(conn: Connection, table: TableClause, key: ColumnElement, size: int, after: Any, *,
           where: Sequence[ColumnElement] = (), dry_run: bool = False) -> tuple[int, Any]:
    """Delete (or count) the next `size` rows at most that match `where`, in key order after `after`.

    Returns (rows, the last key taken, or None when no matching row is left after it).
    """
    from sqlalchemy import select

    in_range = [*where] + ([key > after] if after is not None else [])
    if conn.dialect.name == "postgresql":
        return _by_key_postgres(conn, table, key, size, in_range, dry_run)
    last = conn.execute(select(key).where(*in_range).order_by(key).offset(size - 1).limit(1)).scalar()
    if last is None:
        return _apply(conn, table, in_range, dry_run), None
    return _apply(conn, table, [*in_range, key <= last], dry_run), last


_PLANNER = "SELECT set_config('enable_sort', '{0}', true), set_config('enable_bitmapscan', '{0}', true)"


def _by_key_postgres(conn: Connection, table: TableClause, key: ColumnElement, size: int,
                     in_range: list[ColumnElement], dry_run: bool) -> tuple[int, Any]:
    """One statement: the next `size` matching rows walked along the key's index, deleted by ctid.

    PostgreSQL's index on the value orders a tie by heap position, not by key: ordered by key, a tie is
    read whole and sorted in every batch. Walking the key's index costs the rows the batch takes (the
    planner is told not to sort, which it would choose whenever its statistics predate the tie), and a
    DELETE by ctid cannot pick the value's index either.
    """
    from sqlalchemy import any_, delete, func, literal_column, select

    ctid: Any = literal_column("ctid")
    conn.exec_driver_sql(_PLANNER.format("off"))
    batch = (select(ctid.label("tid"), key.label("k")).select_from(table).where(*in_range)
             .order_by(key).limit(size).cte("batch"))
    seen = [select(func.count()).select_from(batch).scalar_subquery(),
            select(func.max(batch.c.k)).scalar_subquery()]
    if dry_run:
        taken, last = conn.execute(select(*seen)).one()
        n = taken
    else:
        tids = any_(func.array(select(batch.c.tid).scalar_subquery()))
        gone = delete(table).where(ctid == tids).returning(key).cte("gone")
        taken, last, n = tuple(conn.execute(select(*seen, select(func.count()).select_from(gone)
                                                   .scalar_subquery())).one())
    conn.exec_driver_sql(_PLANNER.format("on"))
    return n, last if taken == size else None


def _apply(conn: Connection, table: TableClause, conditions: list[ColumnElement], dry_run: bool) -> int:
    from sqlalchemy import delete, func, select

    if dry_run:
        return conn.execute(select(func.count()).select_from(table).where(*conditions)).scalar() or 0
    return conn.execute(delete(table).where(*conditions)).rowcount
