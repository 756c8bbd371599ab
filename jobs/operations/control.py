"""The operators' levers on a recurring job: break a stale lock, pause and resume it everywhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..locks import Unlock, Unlocked
from .common import known_job, retried

if TYPE_CHECKING:
    from ..app import App

__all__ = ["Unlock", "UnlockResult", "unlock", "PauseResult", "set_paused"]


@dataclass(frozen=True)
class UnlockResult:
    job: str
    backend: str
    unlocked: Unlocked


def unlock(app: App, job: str) -> UnlockResult:
    """The job's lock backend decides: a lease is ended, a lock that dies with its holder is only probed."""
    from ..locks import backend_name

    known_job(app, job)
    backend = retried(app, lambda: app.locks, "choosing the lock backend")
    what = "breaking the lease" if backend.name == "lease" else "probing the lock"
    unlocked = retried(app, lambda: backend.unlock(job, app.config.locks.lease_ttl), what)
    return UnlockResult(job, backend_name(app.config), unlocked)


@dataclass(frozen=True)
class PauseResult:
    job: str
    paused: bool
    changed: bool  # False: it already was


def set_paused(app: App, job: str, paused: bool) -> PauseResult:
    """Pause (or resume) the job on every host: stored in its tracking row."""
    from .. import clock, tracking
    from ..locks import owner_id

    known_job(app, job)
    changed = retried(app, lambda: tracking.set_paused(app.engine, job, paused, owner_id(), clock.utcnow()),
                      "writing the tracking table")
    return PauseResult(job, paused, changed)
