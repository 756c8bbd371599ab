"""Every job the tool knows: the built-ins, plus users' jobs from the `cronwarden.jobs` entry point group.

An entry point names a JobSpec (or a list of them), e.g. in the user's pyproject:
    [project.entry-points."cronwarden.jobs"]
    purge-sessions = "myapp.maintenance:PURGE_SESSIONS"
Plugins are loaded only when an invocation needs them, so a built-in tick stays cheap.
"""

from __future__ import annotations

from typing import Iterable

from .errors import ConfigError
from .spec import JobSpec

ENTRY_POINT_GROUP = "cronwarden.jobs"


def builtin_specs() -> tuple[JobSpec, ...]:
    from .builtin import BUILTIN_JOBS

    return BUILTIN_JOBS


def plugin_specs() -> tuple[JobSpec, ...]:
    from importlib.metadata import entry_points

    found: list[JobSpec] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin is a configuration problem
            raise ConfigError(f"job plugin {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}")
        items = obj if isinstance(obj, (list, tuple)) else [obj]
        for item in items:
            if not isinstance(item, JobSpec):
                raise ConfigError(f"job plugin {ep.name!r} ({ep.value}) is not a JobSpec")
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
