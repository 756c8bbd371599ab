"""The email queue's rows: claiming them and writing what became of them, each a short statement.

The life of a row (pending → sending → sent | pending | failed) is told in email_queue.py; this
module holds the SQL, so the sender reads as the delivery loop it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.sql.expression import TableClause


@dataclass(frozen=True)
class Claim:
    """Rows this process now holds in `sending`, and the (claimed_by, claimed_at) that prove it.

    limit: how many were asked for (fewer means the queue is drained for now); reclaimed: how
    many of the rows were taken back from a dead sender.
    """

    rows: Sequence[Any]
    by: str
    at: datetime
    limit: int
    reclaimed: int = 0


_TIMES = ("next_attempt_at", "claimed_at", "created_at", "sent_at")
_OTHERS = ("id", "to_address", "subject", "body", "status", "attempts", "last_error", "claimed_by")
QUEUE_COLUMNS = _OTHERS + _TIMES


def queue_table(name: str) -> TableClause:
    from cronwarden import ref

    return ref(name, times=_TIMES, others=_OTHERS)


def claimable(q: TableClause, now: datetime, stale_before: datetime) -> Any:  # a SQL condition
    """Due pending rows, and rows left `sending` by a sender presumed dead."""
    from sqlalchemy import and_, or_

    c = q.c
    due = and_(c.status == "pending", or_(c.next_attempt_at.is_(None), c.next_attempt_at <= now))
    stale = and_(c.status == "sending", or_(c.claimed_at.is_(None), c.claimed_at <= stale_before))
    return or_(due, stale)


def claim(conn: Connection, q: TableClause, dialect: str, *, by: str, now: datetime, limit: int,
          stale_before: datetime) -> Claim:
    """Claim up to `limit` rows, oldest first: due pending rows and rows whose sender died.

    Called inside one transaction: SKIP LOCKED (PostgreSQL, MariaDB) hands concurrent claimers
    disjoint rows and the lock holds them until commit; on SQLite the transaction already owns
    the write lock. The UPDATE repeats the condition, so it can only ever take claimable rows.
    Only ids are picked and sorted (from the (status, next_attempt_at) index); the bodies are
    read for the claimed ids alone, by the UPDATE itself where it can return rows (SQLite 3.35+).
    On PostgreSQL the pick, the UPDATE and the read are one statement (a locking CTE, UPDATE …
    FROM … RETURNING): a claim is the first thing each run waits for, and each statement is a
    round trip. MariaDB (no UPDATE … RETURNING) takes the three statements.
    """
    from sqlalchemy import select, update

    c = q.c
    condition = claimable(q, now, stale_before)
    claimed = (c.id, c.to_address, c.subject, c.body, c.attempts, c.next_attempt_at, c.last_error, c.created_at)
    query = select(c.id, c.status).where(condition).order_by(c.id).limit(limit)
    if dialect != "sqlite":
        query = query.with_for_update(skip_locked=True)
    if dialect == "postgresql":
        picked_cte = query.cte("picked")
        returned = sorted(conn.execute(update(q).where(c.id == picked_cte.c.id, condition)
                                       .values(status="sending", claimed_by=by, claimed_at=now)
                                       .returning(*claimed, picked_cte.c.status.label("was"))).all(),
                          key=lambda row: row.id)
        return Claim(returned, by, now, limit, sum(1 for row in returned if row.was == "sending"))
    picked = conn.execute(query).all()
    if not picked:
        return Claim((), by, now, limit)
    ids = [row.id for row in picked]
    take = update(q).where(c.id.in_(ids), condition).values(status="sending", claimed_by=by, claimed_at=now)
    if conn.dialect.update_returning:  # SQLite 3.35+: the UPDATE hands the rows back
        rows: Sequence[Any] = sorted(conn.execute(take.returning(*claimed)).all(), key=lambda row: row.id)
        taken = len(rows)
    else:
        taken = conn.execute(take).rowcount
    if taken != len(ids):
        raise RuntimeError(f"claimed {taken} of {len(ids)} locked rows; refusing to send any")
    if not conn.dialect.update_returning:
        rows = conn.execute(select(*claimed).where(c.id.in_(ids)).order_by(c.id)).all()
    return Claim(rows, by, now, limit, sum(1 for row in picked if row.status == "sending"))


class Outcome(NamedTuple):
    """The new state of one claimed row, written only while the row is still ours (a tuple: one is made
    per email, a frozen dataclass costs six times as much)."""

    row_id: int
    by: str
    claimed_at: datetime
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    sent_at: datetime | None = None

    def params(self) -> dict[str, Any]:
        return {"b_id": self.row_id, "b_by": self.by, "b_claimed": self.claimed_at, "b_status": self.status,
                "b_attempts": self.attempts, "b_next": self.next_attempt_at, "b_error": self.last_error}


def write_outcomes(conn: Connection, q: TableClause, outcomes: Sequence[Outcome]) -> None:
    """Write outcomes, only to rows still claimed by the same claim (a row reclaimed by another
    process is left alone). Sent rows, the common case, take one UPDATE per claim (sent_at: the
    latest acceptance among them); the others one executemany."""
    from sqlalchemy import bindparam, update

    c = q.c
    sent: dict[tuple[str, datetime], list[Outcome]] = {}
    for outcome in outcomes:
        if outcome.status == "sent":
            sent.setdefault((outcome.by, outcome.claimed_at), []).append(outcome)
    for (by, claimed_at), group in sent.items():
        conn.execute(update(q)
                     .where(c.id.in_([o.row_id for o in group]), c.status == "sending", c.claimed_by == by,
                            c.claimed_at == claimed_at)
                     .values(status="sent", attempts=c.attempts + 1,
                             sent_at=max(o.sent_at for o in group if o.sent_at is not None)))
    others = [o.params() for o in outcomes if o.status != "sent"]
    if others:
        conn.execute(update(q)
                     .where(c.id == bindparam("b_id"), c.status == "sending", c.claimed_by == bindparam("b_by"),
                            c.claimed_at == bindparam("b_claimed"))
                     .values(status=bindparam("b_status"), attempts=bindparam("b_attempts"),
                             next_attempt_at=bindparam("b_next"), last_error=bindparam("b_error")), others)


def message_id(row: Any, table: str, domain: str) -> str:
    """The same for every send of a row, from any host: what lets a receiver drop a resend."""
    stamp = f".{row.created_at:%Y%m%d%H%M%S%f}" if row.created_at is not None else ""
    return f"<{row.id}{stamp}.{table}@{domain}>"
