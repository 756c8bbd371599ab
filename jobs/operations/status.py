"""What the operators' read-only views show: the configured jobs, each job's health, the run history."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .common import known_job, retried

if TYPE_CHECKING:
    from ..app import App
    from ..config import Config
    from ..extensions import Section
    from ..health import JobHealth


@dataclass(frozen=True)
class ConfiguredJob:
    name: str
    schedule: str
    enabled: bool
    timeout: str | None
    description: str

    def as_dict(self) -> dict[str, Any]:
        return {"job": self.name, "schedule": self.schedule, "enabled": self.enabled, "timeout": self.timeout,
                "description": self.description}


def configured_jobs(app: App) -> list[ConfiguredJob]:
    """`list`: every configured job (nothing is connected)."""
    return [ConfiguredJob(name, job.schedule.describe(), job.enabled, str(job.timeout) if job.timeout else None,
                          job.spec.description) for name, job in app.config.jobs.items()]


def lock_bounds(config: Config) -> dict[str, Any]:
    """The lock backend and what bounds a vanished host, with the session settings derived from
    [locks] host_loss_bound for this database (nothing is connected)."""
    from ..db import dialect_of
    from ..locks import backend_name

    return {"backend": backend_name(config), **config.locks.host_loss().describe(dialect_of(config.database_url))}


def assess(app: App) -> list[JobHealth]:
    """Every configured job's health from its tracking row (jobs not seen before are noted as seen now
    where the connection may write)."""
    from .. import clock, health, tracking

    now = clock.utcnow()
    states = retried(app, lambda: tracking.all_states(app.engine, tracking.watched(app.config), now),
                     "reading the tracking table")
    running = health.running_runs(states)
    owners = retried(app, lambda: tracking.run_owners(app.engine, running), "reading the running runs") \
        if running else {}
    return health.assess(app.config, states, now, owners)


@dataclass(frozen=True)
class StatusView:
    """`status`: the jobs' health, and each extension's section (the queue's depth)."""

    database: str
    jobs: list[JobHealth]
    sections: list[Section]

    def as_dict(self) -> dict[str, Any]:
        return {"database": self.database, "jobs": [j.as_dict() for j in self.jobs],
                **{s.key: s.data for s in self.sections}}


def status(app: App) -> StatusView:
    from ..registry import builtin_extensions

    jobs = assess(app)
    sections = [ext.status(app) for ext in builtin_extensions() if ext.status is not None]
    return StatusView(app.config.safe_database_url, jobs, sections)


def history(app: App, job: str | None, limit: int, *, failed: bool = False) -> list[dict[str, Any]]:
    """The most recent runs, newest first (of one job or queue task, or all), with their counts decoded;
    failed=True: only the runs that did not succeed."""
    from .. import tracking

    if job is not None:
        known_job(app, job, runs=True)
    rows = retried(app, lambda: tracking.history(app.engine, job, limit, failed=failed), "reading the history")
    return [{**dict(r), "counts": json.loads(r["counts"]) if r["counts"] else {}} for r in rows]
