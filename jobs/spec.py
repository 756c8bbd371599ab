"""JobSpec: what a job is (a name, a default schedule, a settings type, a function)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from .records import FrozenRecord
from .settings import NoSettings

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see jobs/__init__.py)
if TYPE_CHECKING:
    from typing import Any

    from .context import JobContext

_NAME = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")


def check_name(name: str, kind: str) -> None:
    """Job and task names are kebab-case: they become subcommands, config tables and tracking keys."""
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > 128:
        raise ValueError(f"{kind} name {name!r} must be kebab-case and at most 128 characters")


@dataclass(init=False, repr=False, eq=False)
class JobSpec(FrozenRecord):
    """A job, declared once and run by the runner.

    name: kebab-case; the subcommand, the tracking key and the `[jobs.<name>]`
      table in the config (at most 128 characters).
    run: `run(ctx, settings)` does the work through the context (batches in
      `ctx.in_transaction`, counts in `ctx.count`). It must be idempotent.
    settings: a frozen dataclass of the job's own keys (see jobs.settings).
    schedule: the default, `"24h"`-style interval, a cron expression, or
      `"once"` for a job that is due only until it first succeeds.
    default_timeout: the default `timeout` ("30m"); None means no timeout.
    validate: optional `validate(settings)` raising ConfigError for a problem
      that only matters when this job runs (a missing password); it is called
      before the database is touched, so the run exits 78 and changes nothing.
    needs: optional `needs(settings)` returning the application tables the job
      uses and their columns, `{"users": ("id", "last_login_at")}` (a table may be
      `schema.table`); the runner reflects them once per run, before recording
      it, and refuses with one line (exit 78) when one is missing or lacks a column.
    """

    name: str
    run: Callable[[JobContext, Any], None]
    settings: type = NoSettings
    schedule: str = "24h"
    description: str = ""
    default_timeout: timedelta | None = None
    lock_ttl: timedelta | None = None
    validate: Callable[[Any], None] | None = None
    needs: Callable[[Any], Mapping[str, Iterable[str]]] | None = None

    def __init__(self, name: str, run: Callable[[JobContext, Any], None], settings: type = NoSettings,
                 schedule: str = "24h", description: str = "", default_timeout: timedelta | None = None,
                 lock_ttl: timedelta | None = None, validate: Callable[[Any], None] | None = None,
                 needs: Callable[[Any], Mapping[str, Iterable[str]]] | None = None) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "run", run)
        object.__setattr__(self, "settings", settings)
        object.__setattr__(self, "schedule", schedule)
        object.__setattr__(self, "description", description)
        object.__setattr__(self, "default_timeout", default_timeout)
        object.__setattr__(self, "lock_ttl", lock_ttl)
        object.__setattr__(self, "validate", validate)
        object.__setattr__(self, "needs", needs)
        check_name(self.name, "job")
        if not callable(self.run):
            raise ValueError(f"job {self.name!r}: run must be callable")

    @property
    def module_name(self) -> str:
        return self.name.replace("-", "_")
