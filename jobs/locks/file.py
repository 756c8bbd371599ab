"""A lock file per job (flock): one host, SQLite. The kernel frees it when the process dies."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from ..errors import ConfigError


class _FileHeld:
    def __init__(self, lock) -> None:  # noqa: ANN001
        self._lock = lock

    def verify(self, conn) -> None:  # noqa: ANN001
        """flock cannot be lost while the process lives."""

    def check(self) -> None:
        """Nothing to check: see verify."""

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release(force=True)
            self._lock = None


class FileLockBackend:
    name = "file"
    crash_bound = "0 s: the kernel releases flock the moment the holder dies"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def try_acquire(self, job: str, ttl: timedelta) -> _FileHeld | None:
        from filelock import FileLock, Timeout

        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"[locks] directory: cannot create {self.directory}: {exc.strerror}") from None
        lock = FileLock(
            str(self.directory / f"{job}.lock"),
            timeout=0,
            thread_local=False,
            is_singleton=False,
            fallback_to_soft=False,
            preserve_lock_file=True,
        )
        try:
            lock.acquire(timeout=0, blocking=False)
        except Timeout:
            return None
        return _FileHeld(lock)
