"""The built-in jobs: an explicit registry, no import side effects."""

from __future__ import annotations

from ..spec import JobSpec
from .refresh_token_cleanup import JOB as REFRESH_TOKEN_CLEANUP

BUILTIN_JOBS: tuple[JobSpec, ...] = (REFRESH_TOKEN_CLEANUP,)
