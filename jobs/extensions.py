"""The registry through which a part of the tool that is not the core (the queue, the email queue's view)
adds to it: its tables and the schema migrations that create or change them, and its share of the
operators' views (a section of `status`, an alarm of `check`, metric families, run names in the history).

The core reads this registry and never imports an extension; `jobs.registry` names the built-in ones and loads
them when the whole schema is needed (`db upgrade`) or a view asks, never on a tick.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection

    from .app import App
    from .observe.metrics import Family


@dataclass(frozen=True)
class Migration:
    """One numbered step of the tool's schema: `apply(conn)` makes the changes of `version` on any of the three
    databases and returns them as lines (`created table ...`). Steps check before they change (jobs.ddl), so a
    step that finds its change already made, e.g. in a table created from today's model, does nothing."""

    version: int
    apply: Callable[[Connection], list[str]]


@dataclass(frozen=True)
class Section:
    """An extension's part of `status`: `data` under `key` in the JSON, `summary` one line under the table
    (None when it has nothing worth a line)."""

    key: str
    data: Any
    summary: str | None = None


@dataclass(frozen=True)
class Alarm:
    """An extension's part of `check`: `data` under `key` in the JSON (None when quiet); `line` is what the
    text output says when `raised`."""

    key: str
    data: Any
    line: str | None = None

    @property
    def raised(self) -> bool:
        return self.data is not None


@dataclass(frozen=True)
class Extension:
    """What an extension adds. The view hooks take the App (and the time of the view where it matters) and
    make their own retried reads."""

    name: str
    tables: tuple[Table, ...] = ()
    migrations: tuple[Migration, ...] = ()
    status: Callable[[App], Section] | None = None
    alarms: Callable[[App, datetime], Alarm] | None = None
    metrics: Callable[[App, datetime], list[Family]] | None = None
    run_names: Callable[[], Iterable[str]] | None = None  # names of the runs it records in the shared history


_REGISTERED: dict[str, Extension] = {}


def register(extension: Extension) -> Extension:
    """Called by the extension when it is imported; registering the same name twice is a programming error."""
    known = _REGISTERED.get(extension.name)
    if known is not None and known is not extension:
        raise ValueError(f"two extensions are named {extension.name!r}")
    _REGISTERED[extension.name] = extension
    return extension


def registered() -> tuple[Extension, ...]:
    return tuple(_REGISTERED.values())
