"""The registry through which a part of the tool that is not the core (the queue) adds to it: its tables and the
schema migrations that create or change them.

The core reads this registry and never imports an extension; `jobs.registry` names the built-in ones and loads
them when the whole schema is needed (`db upgrade`), never on a tick.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Connection


@dataclass(frozen=True)
class Migration:
    """One numbered step of the tool's schema: `apply(conn)` makes the changes of `version` on any of the three
    databases and returns them as lines (`created table ...`). Steps check before they change (jobs.ddl), so a
    step that finds its change already made, e.g. in a table created from today's model, does nothing."""

    version: int
    apply: Callable[["Connection"], list[str]]


@dataclass(frozen=True)
class Extension:
    name: str
    tables: tuple["Table", ...] = ()
    migrations: tuple[Migration, ...] = ()


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
