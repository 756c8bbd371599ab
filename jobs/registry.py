"""Every job the tool knows: the built-ins, plus users' jobs from the `cronwarden.jobs` entry point group.

An entry point names a JobSpec (or a list of them), e.g. in the user's pyproject:
    [project.entry-points."cronwarden.jobs"]
    purge-sessions = "myapp.maintenance:PURGE_SESSIONS"
Plugins are loaded only when an invocation needs them, so a built-in tick stays cheap.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .errors import ConfigError
from .spec import JobSpec

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see jobs/__init__.py)
if TYPE_CHECKING:
    from typing import Any

    from .extensions import Extension

ENTRY_POINT_GROUP = "cronwarden.jobs"
# Each registers itself (jobs.extensions) when imported and names what it registered EXTENSION; in this order the
# views show their shares.
BUILTIN_EXTENSIONS = ("jobs.queue.extension", "jobs.operations.emails")


def builtin_specs() -> tuple[JobSpec, ...]:
    from .builtin import BUILTIN_JOBS

    return BUILTIN_JOBS


def builtin_extensions() -> tuple[Extension, ...]:
    """Every registered extension, the tool's own first in the order of BUILTIN_EXTENSIONS whatever imported them
    before: read when the whole schema is needed (`db upgrade`) or a view asks (`status`, `check`, metrics)."""
    from importlib import import_module

    from .extensions import registered

    own = tuple(import_module(module).EXTENSION for module in BUILTIN_EXTENSIONS)
    return own + tuple(ext for ext in registered() if ext not in own)


def load_entry_points(group: str, kind: str) -> Iterator[tuple[str, Any]]:
    """Each entry point of the group as (where, the object it names); a plugin that fails to load is a
    configuration problem of the operator's, named in one line (exit 78), not a crash."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=group):
        where = f"{kind} plugin {ep.name!r} ({ep.value})"
        try:
            yield where, ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin is a configuration problem
            raise ConfigError(f"{where} failed to load: {type(exc).__name__}: {exc}") from None


def plugin_specs() -> tuple[JobSpec, ...]:
    found: list[JobSpec] = []
    for where, obj in load_entry_points(ENTRY_POINT_GROUP, "job"):
        for item in obj if isinstance(obj, (list, tuple)) else [obj]:
            if not isinstance(item, JobSpec):
                raise ConfigError(f"{where} is not a JobSpec")
            found.append(item)
    return tuple(found)


def all_specs(*, with_plugins: bool = True) -> tuple[JobSpec, ...]:
    specs = builtin_specs() + (plugin_specs() if with_plugins else ())
    return _unique(specs)


def _unique(specs: Iterable[JobSpec]) -> tuple[JobSpec, ...]:
    seen: dict[str, JobSpec] = {}
    for spec in specs:
        if spec.name in seen and seen[spec.name] is not spec:
            raise ConfigError(f"two jobs are named {spec.name!r}")
        seen[spec.name] = spec
    return tuple(seen.values())
