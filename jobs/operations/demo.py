"""`demo`: the embedded SQLite showcase in ./cronwarden-demo/ (sample data, every job run once)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import demo as demo_data

if TYPE_CHECKING:
    from ..app import App
    from ..outcome import RunReport

DATABASE = demo_data.DATABASE
FOLDER = demo_data.FOLDER
CONFIG = demo_data.CONFIG


def prepare() -> Path:
    """The demo's folder and config (written once, kept afterwards): the config the App is built from."""
    return demo_data.write_config()


def seed(app: App) -> dict[str, int]:
    """The tool's tables and the sample data, once; returns what was created ({} when it was there)."""
    from .. import clock, schema
    from ..errors import UsageError

    if app.engine.dialect.name != "sqlite":
        raise UsageError("demo runs on the embedded SQLite database only; unset CRONWARDEN_DATABASE_URL")
    schema.upgrade(app.engine)
    return demo_data.seed(app.engine, clock.utcnow(), app.config.job("log-cleanup").settings.log_directory)


@dataclass(frozen=True)
class DemoRun:
    reports: list[RunReport]
    email_directory: Path


def run_jobs(app: App, on_report: Callable[[str, RunReport], None] | None = None) -> DemoRun:
    """Every enabled job once, by hand, each secret it lacks filled with a random one for this run only
    (the demo's config names none)."""
    from ..outcome import Trigger
    from ..runner import run_job

    settings = {name: _with_random_secrets(job.settings) for name, job in app.config.jobs.items()}
    reports = []
    for name, job in app.config.jobs.items():
        if not job.enabled:
            continue
        report = run_job(app, name, Trigger.MANUAL, settings=settings[name])
        reports.append(report)
        if on_report is not None:
            on_report(name, report)
    return DemoRun(reports, settings["email-queue"].file_directory)


def _with_random_secrets(value: Any) -> Any:
    import secrets as random_secrets

    from ..secrets import Secret

    changes = {f.name: Secret(random_secrets.token_urlsafe(24)) for f in fields(value)
               if isinstance(getattr(value, f.name), Secret) and not getattr(value, f.name)}
    return replace(value, **changes)
