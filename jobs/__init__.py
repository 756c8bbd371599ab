"""cronwarden's job framework. Jobs import its public API as `cronwarden` (see cronwarden/__init__.py);
these names stay importable from here for jobs written before that name existed.

Each is loaded on first use (PEP 562), as `cronwarden`'s are: importing any `jobs` module imports this
package first, and the quick path (cli/front.py) must not pay for the job context's logging and threads.

For the same reason the modules a not-due tick loads do not import `typing` (~12 M instructions, 2 % of a
MariaDB tick; BENCHMARKS.md): they set `TYPE_CHECKING = False`, which mypy and ruff read as typing.TYPE_CHECKING, and
import typing's names under it; jobs.settings imports typing where it reads a settings type's hints.
"""

from __future__ import annotations

from .lazy import exports

_HOMES = {
    "JobContext": "jobs.context",
    "PermanentError": "jobs.errors",
    "TransientError": "jobs.errors",
    "NoSettings": "jobs.settings",
    "setting": "jobs.settings",
    "JobSpec": "jobs.spec",
}

__all__ = ["JobContext", "JobSpec", "NoSettings", "PermanentError", "TransientError", "setting"]

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see the docstring)
if TYPE_CHECKING:
    from .context import JobContext
    from .errors import PermanentError, TransientError
    from .settings import NoSettings, setting
    from .spec import JobSpec


__getattr__, __dir__ = exports("jobs", _HOMES, globals())
