"""cronwarden's job framework. Jobs import its public API as `cronwarden` (see cronwarden/__init__.py);
these names stay importable from here for jobs written before that name existed.

Each is loaded on first use (PEP 562), as `cronwarden`'s are: importing any `jobs` module imports this
package first, and the quick path (cli/front.py) must not pay for the job context's logging and threads.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_HOMES = {
    "JobContext": "jobs.context",
    "PermanentError": "jobs.errors",
    "TransientError": "jobs.errors",
    "NoSettings": "jobs.settings",
    "setting": "jobs.settings",
    "JobSpec": "jobs.spec",
}

__all__ = ["JobContext", "JobSpec", "NoSettings", "PermanentError", "TransientError", "setting"]

if TYPE_CHECKING:
    from .context import JobContext
    from .errors import PermanentError, TransientError
    from .settings import NoSettings, setting
    from .spec import JobSpec


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'jobs' has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
