"""Claim ahead, record behind: the overlap the email sender and the queue worker share.

A process working through many small claimed items (emails, queued tasks) spends much of its
time in round trips: taking the next claim and committing outcomes. `ClaimAhead` takes the next
claim on a helper thread while the caller works through the current one; `GroupRecorder`
commits outcomes in groups on a thread of its own while the caller goes on.
"""

from __future__ import annotations

import queue as queue_mod
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

C = TypeVar("C")
T = TypeVar("T")
R = TypeVar("R")
_STOP = object()


class GroupRecorder(Generic[T, R]):
    """Writes items with `write(items) -> result`, a group per transaction, in the order they were put.

    background: on a thread of its own (else at once, on the caller's thread). window: after the
    first item of a group the thread waits this long for more (a transaction costs far more than an
    item, and the sleeping thread leaves the GIL to the caller); a group has at most max_items.
    Errors reach the caller: the first failure stops all writing (the items that follow are kept
    in `unwritten`, with the failed group's), and check(), wait() and close() raise it.
    wait() and close() return once everything put so far is written, with the (items, result) of
    each write finished since the last call, so outcomes are reported on the caller's thread.
    """

    def __init__(self, write: Callable[[list[T]], R], *, background: bool = True, window: float = 0.0,
                 max_items: int = 1000, name: str = "cronwarden-record") -> None:
        self._write = write
        self.background = background
        self._window = window
        self._max = max_items
        self._name = name
        self._inbox: queue_mod.SimpleQueue = queue_mod.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._idle = threading.Condition()
        self._outstanding = 0
        self._done: list[tuple[list[T], R]] = []
        self.unwritten: list[T] = []
        self.error: BaseException | None = None

    def put(self, items: list[T]) -> None:
        """Queue items to be written after those put before (the list is copied)."""
        if not items:
            return
        if not self.background:
            self._handle(list(items), 0)
            self.check()
            return
        with self._idle:
            self._outstanding += 1
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
            self._thread.start()
        self._inbox.put(list(items))

    @property
    def in_flight(self) -> bool:
        """Whether items put are still being written."""
        return self._outstanding > 0

    def check(self) -> None:
        """Raise the writer's error: going on without bookkeeping would only make duplicates."""
        if self.error is not None:
            raise self.error

    def wait(self) -> list[tuple[list[T], R]]:
        """Until everything put is written; the writes finished since the last call, in order."""
        with self._idle:
            while self._outstanding:
                self._idle.wait()
            done, self._done = self._done, []
        self.check()
        return done

    def close(self) -> list[tuple[list[T], R]]:
        """Write what is outstanding and stop the thread; raises the writer's error."""
        if self._thread is not None:
            self._closing.set()
            self._inbox.put(_STOP)
            self._thread.join()
            self._thread = None
        return self.wait()

    def _loop(self) -> None:
        while True:
            first = self._inbox.get()
            if first is _STOP:
                return
            groups, items, stop = 1, list(first), False
            if self._window:
                self._closing.wait(self._window)
            while len(items) < self._max:
                try:
                    more = self._inbox.get_nowait()
                except queue_mod.Empty:
                    break
                if more is _STOP:
                    stop = True
                    break
                groups += 1
                items.extend(more)
            self._handle(items, groups)
            if stop:
                return

    def _handle(self, items: list[T], groups: int) -> None:
        if self.error is None:
            try:
                result = self._write(items)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                failed: BaseException | None = exc
            else:
                failed = None
        else:
            failed = self.error
        with self._idle:
            if failed is None:
                self._done.append((items, result))
            else:
                self.error = failed
                self.unwritten.extend(items)
            self._outstanding -= groups
            self._idle.notify_all()


class ClaimAhead(Generic[C]):
    """Hands out claims of at most `chunk` items, `total` items in all, one claim ahead.

    take(limit) claims; size(claim) says how many items it got. While the caller works through
    one claim the next is taken on a helper thread, never two at once. A claim that comes back
    short means nothing more is due for now: no further claim is taken.
    """

    def __init__(self, take: Callable[[int], C], size: Callable[[C], int], *, total: int, chunk: int,
                 name: str = "cronwarden-claims") -> None:
        self._take = take
        self._size = size
        self._left = total
        self._chunk = chunk
        self._name = name
        self._ahead: tuple[Future[C], int] | None = None
        self._pool: ThreadPoolExecutor | None = None

    def next(self) -> C | None:
        """The next claim with items in it, or None once the total is reached or nothing is due."""
        if self._ahead is not None:
            (future, asked), self._ahead = self._ahead, None
            held = future.result()
        elif self._left > 0:
            asked = min(self._left, self._chunk)
            held = self._take(asked)
        else:
            return None
        got = self._size(held)
        self._left = self._left - got if got == asked else 0
        if self._left > 0:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._name)
            limit = min(self._left, self._chunk)
            self._ahead = (self._pool.submit(self._take, limit), limit)
        return held if got else None

    def close(self) -> C | None:
        """Stop claiming; returns the claim taken ahead and never handed out (its items must be given back)."""
        ahead, self._ahead = self._ahead, None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if ahead is None or ahead[0].exception() is not None:
            return None
        return ahead[0].result()
