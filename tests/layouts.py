"""Adversarial data for the bulk jobs, built by the database itself, and a watch on rows per transaction.

`fill(conn, table, n, **values)` inserts n rows of constant values with one INSERT ... SELECT over a
cross join of digits (the same statement on SQLite, PostgreSQL and MariaDB: a million rows take
seconds, not a million round trips). `RowsPerTransaction` counts the rows each committed transaction
deleted or updated in one table: the driver's row counts, or on PostgreSQL the server's own
(pg_stat_xact_user_tables, since a DELETE inside WITH returns rows, not a count). `Vanish` is the
application deleting rows from a second connection while a job runs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Table, bindparam, insert, literal, select, union_all


def numbers(n: int):
    """SELECT i FROM 0..n-1, as a cross join of ten-row digit lists."""
    width = max(1, len(str(max(n - 1, 0))))
    digits = union_all(*[select(literal(d).label("d")) for d in range(10)])
    places = [digits.subquery(f"p{p}") for p in range(width)]
    i = sum((place.c.d * 10 ** p for p, place in enumerate(places)), literal(0))
    query = select(i.label("i")).select_from(places[0])
    for place in places[1:]:
        # Always true (digits differ by at most 9), and names both sides: a cross join SQLAlchemy accepts.
        query = query.join(place, place.c.d <= places[0].c.d + 9)
    return query.where(i < n)


def fill(conn, table: Table, n: int, **values: Any) -> None:
    """n rows whose columns hold the given values: constants (typed as the table's columns), or
    callables of the row number i (0..n-1) returning an SQL expression, for unique columns."""
    if n <= 0:
        return
    rows = numbers(n).subquery("n")
    columns = [value(rows.c.i).label(name) if callable(value) else
               bindparam(f"v_{name}", value, type_=table.c[name].type).label(name)
               for name, value in values.items()]
    conn.execute(insert(table).from_select(list(values), select(*columns).select_from(rows)))


def text_of(prefix: str):
    """For fill: the text prefix || i (unique per row)."""
    from sqlalchemy import String, cast

    return lambda i: literal(prefix) + cast(i, String(20))


class RowsPerTransaction:
    """Rows deleted or updated in `table` by each committed transaction of this process (SQLAlchemy events).

    A savepoint rolled back takes its rows back; a transaction rolled back counts nothing.
    """

    def __init__(self, table: str) -> None:
        import re

        self.table = table
        self._writes = re.compile(rf"(DELETE\s+FROM|^\s*UPDATE)\s+[`\"]?{re.escape(table)}\b", re.IGNORECASE)
        self._changes_before = 0
        self.committed: list[int] = []
        self._open: dict[int, list[int]] = defaultdict(lambda: [0])

    def __enter__(self) -> RowsPerTransaction:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        for name, fn in self._events():
            event.listen(Engine, name, fn)
        return self

    def __exit__(self, *exc: object) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        for name, fn in self._events():
            event.remove(Engine, name, fn)

    def _events(self) -> Iterator[tuple[str, Any]]:
        yield "before_cursor_execute", self._before
        yield "after_cursor_execute", self._executed
        yield "commit", self._commit
        yield "rollback", self._rollback
        yield "savepoint", self._savepoint
        yield "rollback_savepoint", self._rollback_savepoint
        yield "release_savepoint", self._release_savepoint

    def _before(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if conn.dialect.name == "postgresql" and self._writes.search(statement):
            self._changes_before = self._changes_so_far(conn)

    def _executed(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if not self._writes.search(statement):
            return
        if conn.dialect.name == "postgresql":  # a DELETE inside WITH returns its own rows, not a row count
            changed = self._changes_so_far(conn) - self._changes_before
        else:
            changed = max(cursor.rowcount, 0)
        self._open[id(conn)][-1] += changed

    def _changes_so_far(self, conn) -> int:
        """PostgreSQL: the rows this transaction deleted or updated in the table so far (the server's count)."""
        cursor = conn.connection.dbapi_connection.cursor()
        cursor.execute("SELECT coalesce(sum(n_tup_del + n_tup_upd), 0) FROM pg_stat_xact_user_tables "
                       "WHERE relname = %s", (self.table,))
        return int(cursor.fetchone()[0])

    def _commit(self, conn) -> None:
        stack = self._open.pop(id(conn), [0])
        if sum(stack):
            self.committed.append(sum(stack))

    def _rollback(self, conn) -> None:
        self._open.pop(id(conn), None)

    def _savepoint(self, conn, name) -> None:
        self._open[id(conn)].append(0)

    def _rollback_savepoint(self, conn, name, context) -> None:
        stack = self._open[id(conn)]
        if len(stack) > 1:
            stack.pop()

    def _release_savepoint(self, conn, name, context) -> None:
        stack = self._open[id(conn)]
        if len(stack) > 1:
            inner = stack.pop()
            stack[-1] += inner

    @property
    def largest(self) -> int:
        return max(self.committed, default=0)


class Vanish:
    """The application deleting rows while a job runs: on the job's `at`-th read of `table` (a statement with
    LIMIT; on SQLite, where a batch holds the write lock, its `at`-th connection instead), another
    connection deletes every row matching `where` that no transaction has locked, and commits.
    """

    def __init__(self, url: str, table: Table, where: Any, at: int) -> None:
        from jobs.db import make_engine

        self.engine = make_engine(url)
        self.table, self.where, self.at = table, where, at
        self.seen = 0
        self.deleted = 0
        self.sqlite = self.engine.dialect.name == "sqlite"

    def __enter__(self) -> Vanish:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.listen(Engine, *self._event())
        return self

    def __exit__(self, *exc: object) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.remove(Engine, *self._event())
        self.engine.dispose()

    def _event(self) -> tuple[str, Any]:
        return ("engine_connect", self._connected) if self.sqlite else ("before_cursor_execute", self._executing)

    def _connected(self, conn) -> None:
        if conn.engine is not self.engine:
            self._tick()

    def _executing(self, conn, cursor, statement, parameters, context, executemany) -> None:
        text = statement.lstrip().upper()
        if conn.engine is not self.engine and text.startswith(("SELECT", "WITH")) and "LIMIT" in text \
                and self.table.name.upper() in text:
            self._tick()

    def _tick(self) -> None:
        self.seen += 1
        if self.seen == self.at:
            self.deleted += self._delete_unlocked()

    def _delete_unlocked(self) -> int:
        from sqlalchemy import delete, literal_column, select

        with self.engine.begin() as conn:
            if self.sqlite:
                return conn.execute(delete(self.table).where(self.where)).rowcount
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
                ctid = literal_column("ctid")
                unlocked = select(ctid).select_from(self.table).where(self.where).with_for_update(skip_locked=True)
                return conn.execute(delete(self.table).where(ctid.in_(unlocked))).rowcount
            conn.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 5")
            keys = conn.execute(select(self.table.c.id).where(self.where).with_for_update(skip_locked=True)).scalars()
            # One row at a time: given the whole list, InnoDB may scan and wait on a row the job has locked.
            return sum(conn.execute(delete(self.table).where(self.table.c.id == k)).rowcount for k in list(keys))
