"""JobContext: everything a job's run() may use, and nothing else."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from . import clock
from .errors import LeaseLost, TimedOut

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from .batches import BatchSize
    from .claims import ClaimAhead, GroupRecorder
    from .config import RetryPolicy
    from .locks import Held
    from .signals import StopFlag

T = TypeVar("T")
C = TypeVar("C")
SQLITE_CHECKPOINT_EVERY = 4  # batches between WAL checkpoints, which run outside any batch's transaction


class Progress(Protocol):
    """Where progress goes: a rich bar on a terminal, nowhere under cron."""

    def total(self, n: int | None) -> None: ...

    def advance(self, n: int) -> None: ...

    def close(self) -> None: ...


class NoProgress:
    def total(self, n: int | None) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


class JobContext:
    """The job's view of one run.

    now: the run's start (aware UTC): compute cutoffs from it, so every batch agrees.
    current_time(): the time when called (aware UTC), for what ages during the run (a claim's lease).
    dry_run: report what would change; in_transaction always rolls back.
    log: a logger whose lines carry the job name and run id.
    in_transaction(fn, *args): one batch = one transaction on a fresh
      connection, retried as a whole on transient errors; checks for a stop
      request and the timeout before it starts, and that the lock is still
      held before it commits. tally=fn maps the batch's result to counters
      ({"deleted": n}): they are added once it commits, and the run's history row
      gets the run's counts inside the batch's own transaction, so a run killed
      later still shows exactly what it had committed.
    record(fn, *args): one transaction that records what already happened (an email sent): it runs
      after a stop request, the timeout or a lost lock too, so fn must guard its own rows.
    recorder(fn, *args) / claims_ahead(take, ...): the job's bookkeeping on helper threads
      (jobs/claims.py); counters and batches are safe to use from them.
    count(name, n): add to a counter reported in logs, history and --json (from any thread).
    owner: host:pid, as claims and locks store it.
    last_transaction: seconds the last batch's transaction took (for jobs that size batches by time).
    largest_batch: the most items one transaction tallied.
    """

    def __init__(
        self,
        *,
        job: str,
        run_id: int | None,
        now: datetime,
        engine: Engine,
        log: logging.LoggerAdapter,
        retry: RetryPolicy,
        stop: StopFlag,
        held: Held | None,
        dry_run: bool = False,
        deadline: float | None = None,
        progress: Progress | None = None,
        observers: list | None = None,
    ) -> None:
        self.job = job
        self.run_id = run_id
        self.now = now
        self.engine = engine
        self.log = log
        self.dry_run = dry_run
        self.counts: dict[str, int] = {}
        self.details: list[str] = []
        self.transactions = 0
        self.longest_transaction = 0.0
        self.last_transaction = 0.0
        self.largest_batch = 0
        self._retry = retry
        self._stop = stop
        self._held = held
        self._deadline = deadline
        self._progress = progress or NoProgress()
        self._batch_hooks = [o.batch for o in observers or () if hasattr(o, "batch")]
        self._unchecked = 0  # SQLite: batches committed since the last WAL checkpoint
        self._lock = threading.Lock()  # counters and transaction figures: helper threads run batches too

    def close(self) -> None:
        """End the progress display (the runner calls this when run() returns)."""
        self._progress.close()
        if self._unchecked:
            self._sqlite_checkpoint()

    @property
    def dialect(self) -> str:
        """'sqlite', 'postgresql' or 'mysql' (MariaDB included)."""
        from .db import family

        return family(self.engine.dialect.name)

    def checkpoint(self) -> None:
        """A batch boundary: stop here on SIGTERM/SIGINT, when the timeout has passed or the lock is known lost
        (a lease not renewed in time: no batch, and no retry of one, starts after its holder stepped down)."""
        self._stop.check()
        if self._held is not None and not self.dry_run:
            self._held.check()
        if self._deadline is not None and time.monotonic() >= self._deadline:
            raise TimedOut(f"{self.job} passed its timeout")

    def in_transaction(self, fn: Callable[..., T], *args: Any,
                       tally: Callable[[T], dict[str, int]] | None = None, **kwargs: Any) -> T:
        from . import retry

        self.checkpoint()

        def attempt() -> T:
            started = time.perf_counter()
            with ExitStack() as hooks, self.engine.connect() as conn, _no_autocheckpoint(conn):
                for hook in self._batch_hooks:
                    hooks.enter_context(hook(self.job, self.run_id))
                tx = conn.begin()
                try:
                    result = fn(conn, *args, **kwargs)
                    counts = tally(result) if tally is not None else {}
                    if self.run_id is not None and not self.dry_run and (counts or self.counts):
                        from .tracking import record_counts

                        with self._lock:
                            totals = _added(self.counts, counts)
                        record_counts(conn, self.run_id, totals)
                    if self._held is not None and not self.dry_run:
                        self._held.verify(conn)
                    if self.dry_run:
                        tx.rollback()
                    else:
                        tx.commit()
                except LeaseLost:
                    # The lock is gone, most often with the host's network: a ROLLBACK would wait for a
                    # server that cannot answer (and its error would hide this one). Closing the
                    # connection rolls the batch back all the same.
                    conn.invalidate()
                    raise
                except BaseException:
                    tx.rollback()
                    raise
            elapsed = time.perf_counter() - started
            with self._lock:
                self.transactions += 1
                self.longest_transaction = max(self.longest_transaction, elapsed)
                self.last_transaction = elapsed
                self.largest_batch = max(self.largest_batch, sum(counts.values()))
                checkpoint = False
                if self.dialect == "sqlite" and not self.dry_run:
                    self._unchecked += 1
                    checkpoint = self._unchecked >= SQLITE_CHECKPOINT_EVERY
            for name, n in counts.items():
                self.count(name, n)
            if checkpoint:
                self._sqlite_checkpoint()
            return result

        return retry.call(attempt, self._retry, sleep=self._stop.sleep, what=f"{self.job} batch",
                          before_attempt=self.checkpoint)

    def in_batches(self, step: Callable[..., T], size: BatchSize, *args: Any,
                   tally: Callable[[T], dict[str, int]] | None = None, **kwargs: Any) -> T:
        """Run `step(conn, *args, size=rows, after=position, **kwargs)` one transaction per batch (see
        in_transaction) until the position it returns last (its result's last item) is None; `rows`
        follows the previous batch's duration (BatchSize). Returns the last batch's result."""
        after: Any = None
        while True:
            result = self.in_transaction(step, *args, size=size.rows, after=after, tally=tally, **kwargs)
            after = result[-1]  # type: ignore[index]
            if after is None:
                return result
            size.after(self.last_transaction)

    def record(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Write down what already happened, which a stop request or a lost lock cannot undo (a message
        sent): one transaction, retried on transient errors, without the checks a batch of work has; fn's
        statements must only touch rows still ours. Rolled back in a dry run."""
        from . import retry

        def attempt() -> T:
            with self.engine.connect() as conn:
                tx = conn.begin()
                try:
                    result = fn(conn, *args, **kwargs)
                except BaseException:
                    tx.rollback()
                    raise
                if self.dry_run:
                    tx.rollback()
                else:
                    tx.commit()
                return result

        return retry.call(attempt, self._retry, what=f"{self.job} bookkeeping")

    def recorder(self, fn: Callable[..., Any], *args: Any, window: float, max_items: int) -> GroupRecorder:
        """Items written behind the job's back by fn(conn, *args, items), a group per `record`
        transaction, on a thread of its own (jobs/claims.py has the rules)."""
        from .claims import GroupRecorder

        return GroupRecorder(lambda items: self.record(fn, *args, items), window=window, max_items=max_items,
                             name=f"{self.job}-recorder")

    def claims_ahead(self, take: Callable[[int], C], size: Callable[[C], int], *, total: int,
                     chunk: int) -> ClaimAhead[C]:
        """Claims of at most chunk items, total in all, the next taken on a helper thread while the job
        works through the current one; take(limit) claims, through in_transaction."""
        from .claims import ClaimAhead

        return ClaimAhead(take, size, total=total, chunk=chunk, name=f"{self.job}-claims")

    @property
    def owner(self) -> str:
        from .execution import owner_id

        return owner_id()

    def _sqlite_checkpoint(self) -> None:
        """Copy the WAL back into the database between batches, never inside one.

        SQLite's automatic checkpoint runs inside whichever COMMIT pushes the WAL past 1,000 pages,
        making that batch's transaction 0.1-0.2 s longer; a PASSIVE checkpoint never waits for readers
        or writers, and one that could not finish is simply done again later.
        """
        self._unchecked = 0
        try:
            with self.engine.connect() as conn:
                raw: Any = conn.connection.driver_connection
                raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except Exception as exc:  # noqa: BLE001 - a checkpoint is housekeeping, never a reason to fail
            self.log.debug("WAL checkpoint skipped: %s", exc)

    def count(self, name: str, n: int = 1, *, progress: bool = True) -> None:
        """Add to a counter; progress=False for measures that are not items (bytes freed)."""
        with self._lock:
            self.counts[name] = self.counts.get(name, 0) + n
        if progress:
            self._progress.advance(n)

    def set_total(self, n: int | None) -> None:
        """The expected number of items, for the progress bar (optional)."""
        self._progress.total(n)

    def detail(self, line: str) -> None:
        """A line for the report (what a dry run would delete, what was skipped)."""
        self.details.append(line)

    def current_time(self) -> datetime:
        """Now, read from the one clock tests travel with; `now` stays the run's start."""
        return clock.utcnow()

    def cutoff(self, days: int) -> datetime:
        return self.now - timedelta(days=days)


def _added(counts: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    """counts plus more, as a new dict (the caller holds the context's lock)."""
    merged = dict(counts)
    for name, n in more.items():
        merged[name] = merged.get(name, 0) + n
    return merged


@contextmanager
def _no_autocheckpoint(conn: Connection) -> Iterator[None]:
    """SQLite: no automatic checkpoint inside this batch's COMMIT (JobContext checkpoints between batches).

    Set on the DBAPI connection directly: through SQLAlchemy the PRAGMA would open a transaction.
    """
    if conn.dialect.name != "sqlite":
        yield
        return
    raw: Any = conn.connection.driver_connection
    raw.execute("PRAGMA wal_autocheckpoint = 0").fetchall()
    try:
        yield
    finally:
        try:
            raw.execute("PRAGMA wal_autocheckpoint = 1000").fetchall()
        except Exception:  # noqa: BLE001 - a broken connection is discarded by the pool anyway
            pass
