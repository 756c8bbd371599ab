"""cronwarden's job framework. The job-author API is what this module exports, nothing else."""

from .context import JobContext
from .errors import PermanentError, TransientError
from .settings import NoSettings, setting
from .spec import JobSpec

__all__ = ["JobContext", "JobSpec", "NoSettings", "PermanentError", "TransientError", "setting"]
