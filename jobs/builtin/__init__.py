"""The built-in jobs: an explicit registry, no import side effects."""

from __future__ import annotations

from cronwarden import JobSpec

from .admin_seed import JOB as ADMIN_SEED
from .email_queue import JOB as EMAIL_QUEUE
from .ip_anonymization import JOB as IP_ANONYMIZATION
from .log_cleanup import JOB as LOG_CLEANUP
from .refresh_token_cleanup import JOB as REFRESH_TOKEN_CLEANUP

BUILTIN_JOBS: tuple[JobSpec, ...] = (REFRESH_TOKEN_CLEANUP, IP_ANONYMIZATION, EMAIL_QUEUE, LOG_CLEANUP, ADMIN_SEED)
