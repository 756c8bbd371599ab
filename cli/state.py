"""The per-invocation CLI state kept in ctx.obj: global options, and the App built on first use."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see jobs/__init__.py)
if TYPE_CHECKING:
    from typing import Any

    from jobs.app import App
    from jobs.spec import JobSpec


@dataclass
class State:
    specs: tuple[JobSpec, ...]
    plugins_loaded: bool
    config_path: str | None = None
    database_url: str | None = None
    log_format: str = "text"
    quiet: bool = False
    verbose: bool = False
    metrics_file: str | None = None
    pushgateway: str | None = None
    _app: App | None = field(default=None, repr=False)

    def app(self, *, progress: bool = False, read_only: bool = False, creates: bool = False) -> App:
        """Load and validate the configuration (ConfigError → 78) and build the App.

        read_only: the command only reads (status, check, history, list, metrics, queue list/show), so it
        never creates the database or a table. creates: `db upgrade` and `demo`, the commands that create a
        database other than the embedded default.
        """
        if self._app is not None:
            return self._app
        from jobs import config as config_mod
        from jobs.app import App
        from jobs.observe import attach

        path = config_mod.find_config_file(self.config_path, os.environ)
        raw = config_mod.read_toml(path)
        specs = self.specs
        unknown = config_mod.referenced_jobs(raw) - {s.name for s in specs}
        if unknown and not self.plugins_loaded:
            from jobs.registry import all_specs

            specs = all_specs(with_plugins=True)
        config = config_mod.load(raw, specs, database_url=self.database_url, source=path)
        app = App(config, read_only=read_only, creates=creates)
        attach(app, metrics_file=self.metrics_file, pushgateway=self.pushgateway)
        self._app = app
        if progress and not self.quiet and sys.stderr.isatty() and self.log_format == "text":
            from .render import RichProgress

            self._app.progress = RichProgress
        return self._app

    def log_level(self) -> int:
        if self.verbose:
            return logging.DEBUG
        if self.quiet:
            return logging.WARNING
        return logging.WARNING if sys.stdout.isatty() and self.log_format == "text" else logging.INFO

    def close(self) -> None:
        if self._app is not None:
            self._app.close()


def start(specs: tuple[JobSpec, ...], plugins_loaded: bool, **options: Any) -> State:
    """The invocation's State, its logging set up as the global options say: the root command's first step,
    and the front's for a line it runs itself."""
    from . import logs

    state = State(specs, plugins_loaded, **options)
    logs.setup(state.log_format, state.log_level())
    return state
