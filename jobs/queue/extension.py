"""The queue as an extension of the core: its table (step 2 of the tool's schema), its depth in `status` and
metrics, its tasks' runs in the history.

Loaded by `jobs.registry.builtin_extensions`, never imported by the core itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..extensions import Extension, Migration, Section, register
from ..operations.common import retried
from .models import create_table, queued_jobs

if TYPE_CHECKING:
    from ..app import App
    from ..observe.metrics import Family


def _depth(app: App) -> dict[str, Any]:
    from . import queue_depth

    return retried(app, lambda: queue_depth(app.engine), "reading the queue")


def status_section(app: App) -> Section:
    """Jobs per status; a line under the status table only when some wait."""
    depth = _depth(app)
    waiting = {status: n for status, n in depth["counts"].items() if n}
    summary = None
    if waiting:
        oldest = depth["oldest_due_seconds"]
        summary = ("queue: " + ", ".join(f"{n} {status}" for status, n in waiting.items())
                   + (f"; oldest due job waiting {oldest:.0f}s" if oldest else ""))
    return Section("queue", depth, summary)


def metric_families(app: App, now: datetime) -> list[Family]:
    return families(_depth(app))


def families(depth: Mapping[str, Any]) -> list[Family]:
    """The one-off queue: jobs per status and how long the oldest due one has waited."""
    from ..observe.metrics import Family

    jobs = Family("cronwarden_queue_jobs", "gauge", "One-off jobs in the queue table, by status.")
    for status, count in depth["counts"].items():
        jobs.add(count, status=status)
    oldest = Family("cronwarden_queue_oldest_due_seconds", "gauge",
                    "Seconds the oldest due queued job has waited to run; 0 when none is waiting.")
    oldest.add(depth["oldest_due_seconds"] or 0.0)
    return [jobs, oldest]


def task_names() -> list[str]:
    from . import task_specs

    return list(task_specs())


EXTENSION = register(Extension("queue", tables=(queued_jobs,), migrations=(Migration(2, create_table),),
                               status=status_section, metrics=metric_families, run_names=task_names))
