"""The resources of one invocation: validated config, and an engine and lock backend built on first use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .context import NoProgress, Progress

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from .config import Config, JobConfig
    from .locks import LockBackend
    from .outcome import RunReport, Trigger


class Observer(Protocol):
    """Watches runs (metrics, dead-man pings, traces). A failing observer never fails the job.

    Optional: `batch(job, run_id) -> ContextManager` wraps every transaction of a run;
    `run_skipped(job, report)` after a tick that ran nothing (not due, locked, paused, disabled).
    """

    def run_started(self, job: JobConfig, run_id: int, trigger: Trigger) -> None: ...

    def run_finished(self, job: JobConfig, report: RunReport) -> None: ...


@dataclass
class App:
    config: Config
    progress: Callable[[str], Progress] = field(default=lambda _job: NoProgress())
    observers: list[Observer] = field(default_factory=list)
    read_only: bool = False  # a command that only reads: it never creates the database or a table
    creates: bool = False  # `db upgrade`, `demo`: may create the database (an SQLite file) and the tool's tables
    _engine: Engine | None = None
    _locks: LockBackend | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from .config import embedded_default
            from .db import make_engine

            url = self.config.database_url
            self._engine = make_engine(url, bounds=self.config.locks.host_loss(), read_only=self.read_only,
                                       create=self.creates or embedded_default(url))
        return self._engine

    @property
    def locks(self) -> LockBackend:
        if self._locks is None:
            from .locks import backend_for

            self._locks = backend_for(self.config, self.engine)
        return self._locks

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
