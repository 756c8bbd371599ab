"""cronwarden's job framework. Jobs import its public API as `cronwarden` (see cronwarden/__init__.py);
these names stay importable from here for jobs written before that name existed."""

from .context import JobContext
from .errors import PermanentError, TransientError
from .settings import NoSettings, setting
from .spec import JobSpec

__all__ = ["JobContext", "JobSpec", "NoSettings", "PermanentError", "TransientError", "setting"]
