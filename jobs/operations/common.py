"""What every operation shares: retried database calls and the check that a job name is known."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from ..errors import UsageError

if TYPE_CHECKING:
    from ..app import App

T = TypeVar("T")


def retried(app: App, fn: Callable[[], T], what: str) -> T:
    """A database call outside any job: transient errors retried, then DatabaseUnavailable (exit 75); a
    setup mistake becomes the ConfigError that names it."""
    from ..execution import db_call

    return db_call(app, fn, what)


def known_job(app: App, job: str, *, runs: bool = False) -> str:
    """A configured recurring job's name; with runs=True also any other name the history records runs
    under (an extension's, such as a queue task's). UsageError otherwise."""
    known = list(app.config.jobs)
    if runs:
        from ..registry import builtin_extensions

        known += [name for ext in builtin_extensions() if ext.run_names is not None for name in ext.run_names()]
    if job not in known:
        raise UsageError(f"unknown job {job!r} (known: {', '.join(known)})")
    return job
