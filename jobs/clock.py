"""The one place that reads the wall clock, so tests can travel in time."""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    """Aware UTC now; every schedule and record is computed from this."""
    return datetime.now(timezone.utc)


NEVER = datetime.max.replace(tzinfo=timezone.utc)
"""When a job that will not run again is next due (a one-shot job after its success); stored as such."""


def is_never(t: datetime) -> bool:
    """Whether t is NEVER as read back from any database (naive or aware, truncated to its precision)."""
    return t.year == NEVER.year
