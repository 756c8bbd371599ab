"""`db upgrade`: the tool's tables to this version, the configured jobs noted as known, and on request the
default application tables."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .common import retried

if TYPE_CHECKING:
    from ..app import App


def upgrade(app: App, *, app_tables: bool = False) -> list[str]:
    """Returns what changed, one line each. Noting every enabled job as known from now on lets `check`
    report one that never runs."""
    from .. import clock, schema, tracking

    changes = retried(app, lambda: schema.upgrade(app.engine), "upgrading the schema")
    retried(app, lambda: tracking.note_seen(app.engine, tracking.watched(app.config), clock.utcnow()),
            "noting the configured jobs")
    if app_tables:
        from ..app_tables import create_default_tables

        changes += retried(app, lambda: create_default_tables(app.engine), "creating the application tables")
    return changes
