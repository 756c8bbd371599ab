"""In-process retries of transient errors (tenacity), imported only when a first attempt fails."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .config import RetryPolicy
from .errors import is_lock_wait, is_transient

T = TypeVar("T")
log = logging.getLogger("cronwarden.retry")


def call(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] | None = None,
    what: str = "database call",
    before_attempt: Callable[[], None] | None = None,
) -> T:
    """Run fn; retry transient failures with jittered exponential backoff, bounded by attempts and time.

    The time budget counts from the first attempt: no retry starts, and no backoff sleeps, past
    `max_time` after it (the last backoff is cut short to start the last attempt at max_time, so an
    outage shorter than max_time is still ridden out), and the whole call ends within max_time plus
    one attempt's own timeouts (connect, read: jobs/host_loss.py) however slowly each attempt fails.
    A first attempt that used up the budget waiting on a lock the database timed itself (SQLite's
    busy_timeout, a lock wait timeout, a deadlock) still gets one more attempt: the server answered.
    The first attempt runs without tenacity, so the common path costs no import.
    before_attempt runs ahead of each retry (the runner uses it to stop on a signal).
    """
    started = time.monotonic()
    try:
        return fn()
    except Exception as exc:
        if policy.attempts <= 1 or not is_transient(exc):
            raise
        first_error = exc
    from tenacity import (
        Retrying,
        retry_if_exception,
        stop_after_attempt,
        stop_any,
        wait_exponential_jitter,
    )
    from tenacity.stop import stop_base

    budget = policy.max_time.total_seconds()
    if time.monotonic() - started >= budget and not is_lock_wait(first_error):
        raise first_error
    log.info("%s failed (%s); retrying", what, _brief(first_error))

    def before(_state) -> None:
        if before_attempt is not None:
            before_attempt()

    def after(state: Any) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if exc is not None and is_transient(exc):
            log.info("%s failed again (attempt %d): %s", what, state.attempt_number + 1, _brief(exc))

    backoff = wait_exponential_jitter(
        multiplier=policy.initial_wait.total_seconds(),
        max=policy.max_wait.total_seconds(),
        jitter=policy.initial_wait.total_seconds(),
    )

    def wait(state: Any) -> float:  # the last backoff is cut short so the last attempt starts at max_time
        return max(0.0, min(backoff(state), budget - (time.monotonic() - started)))

    class OutOfTime(stop_base):
        def __call__(self, _state: Any) -> bool:
            return time.monotonic() - started >= budget

    retrying = Retrying(
        stop=stop_any(stop_after_attempt(policy.attempts - 1), OutOfTime()),
        wait=wait,
        retry=retry_if_exception(is_transient),
        reraise=True,
        sleep=sleep or time.sleep,
        before=before,
        after=after,
    )
    return retrying(fn)


def _brief(exc: BaseException) -> str:
    from .errors import one_line

    return one_line(exc)
