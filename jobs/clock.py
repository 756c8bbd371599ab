"""The one place that reads the wall clock, so tests can travel in time."""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    """Aware UTC now; every schedule and record is computed from this."""
    return datetime.now(timezone.utc)
