"""SIGTERM/SIGINT become a stop request, honoured at the next batch boundary.

A second signal raises Interrupted at once (the batch in flight rolls back). Stops nest: a run inside a
`--for` loop (jobs.ticking) starts already stopped when the loop was asked to stop, and a signal the run
receives stops the loop too, so one signal ends the whole process whichever part of it was running.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import Interrupted


class StopFlag:
    def __init__(self) -> None:
        self.signum: int | None = None
        self._event = threading.Event()

    def request(self, signum: int) -> None:
        self.signum = signum
        self._event.set()

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def check(self) -> None:
        """Raise Interrupted if a stop was requested."""
        if self.signum is not None:
            raise Interrupted(self.signum)

    def sleep(self, seconds: float) -> None:
        """A sleep that ends early on a stop request (used by retry backoff and jitter)."""
        self._event.wait(seconds)
        self.check()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True when a stop request ended it (the --for loop between rounds)."""
        return self._event.wait(seconds)


_active: list[StopFlag] = []  # the enclosing stops of the main thread, innermost last


@contextmanager
def graceful_stop() -> Iterator[StopFlag]:
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    outer = list(_active)
    if outer and outer[-1].signum is not None:
        flag.request(outer[-1].signum)

    def handler(signum: int, _frame: Any) -> None:
        if flag.requested:
            raise Interrupted(signum)
        flag.request(signum)
        for enclosing in outer:
            if not enclosing.requested:
                enclosing.request(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    _active.append(flag)
    try:
        yield flag
    finally:
        _active.remove(flag)
        for sig, old in previous.items():
            signal.signal(sig, old)
