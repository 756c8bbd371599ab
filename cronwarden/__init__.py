"""cronwarden's public job API: everything a job may import, the built-in jobs included.

    from cronwarden import JobContext, JobSpec, setting     # a recurring job
    from cronwarden import TaskSpec, enqueue                 # a one-off task, and queueing one

The framework lives in the `jobs` package (the older `from jobs import JobSpec` still works);
this name cannot collide with an application's own `jobs` package. Each name is loaded on
first use, so importing cronwarden imports nothing: only `ref` brings SQLAlchemy with it.
"""

from __future__ import annotations

from jobs.lazy import exports

_HOMES = {
    "JobSpec": "jobs.spec",
    "JobContext": "jobs.context",
    "setting": "jobs.settings",
    "NoSettings": "jobs.settings",
    "ConfigError": "jobs.errors",
    "PermanentError": "jobs.errors",
    "TransientError": "jobs.errors",
    "Secret": "jobs.secrets",
    "redact": "jobs.secrets",
    "ref": "jobs.app_tables",
    "identifier": "jobs.checks",
    "private_directory": "jobs.files",
    "atomic_write": "jobs.files",
    "BatchSize": "jobs.batches",
    "After": "jobs.batches",
    "oldest_first": "jobs.batches",
    "by_key": "jobs.batches",
    "TaskSpec": "jobs.queue",
    "enqueue": "jobs.queue",
    "InvalidArguments": "jobs.queue",
    "GroupRecorder": "jobs.claims",
    "ClaimAhead": "jobs.claims",
}

__all__ = sorted(_HOMES)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see jobs/__init__.py)
if TYPE_CHECKING:
    from jobs.app_tables import ref
    from jobs.batches import After, BatchSize, by_key, oldest_first
    from jobs.checks import identifier
    from jobs.claims import ClaimAhead, GroupRecorder
    from jobs.context import JobContext
    from jobs.errors import ConfigError, PermanentError, TransientError
    from jobs.files import atomic_write, private_directory
    from jobs.queue import InvalidArguments, TaskSpec, enqueue
    from jobs.secrets import Secret, redact
    from jobs.settings import NoSettings, setting
    from jobs.spec import JobSpec


__getattr__, __dir__ = exports("cronwarden", _HOMES, globals())
