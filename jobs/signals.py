"""SIGTERM/SIGINT become a stop request, honoured at the next batch boundary.

A second signal raises Interrupted at once (the batch in flight rolls back).
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
        """A sleep that ends early on a stop request (used by retry backoff)."""
        self._event.wait(seconds)
        self.check()


@contextmanager
def graceful_stop() -> Iterator[StopFlag]:
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, _frame: Any) -> None:
        if flag.requested:
            raise Interrupted(signum)
        flag.request(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
