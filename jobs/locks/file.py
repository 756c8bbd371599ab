"""A lock file per job (flock): one host, SQLite. The kernel frees it when the process dies."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from ..errors import ConfigError
from . import Unlocked, probe_unlock

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see jobs/__init__.py)
if TYPE_CHECKING:
    from typing import Any


def lock_path(directory: Path, job: str) -> Path:
    return Path(directory) / f"{job}.lock"


def held_elsewhere(directory: Path, job: str) -> bool:
    """Whether another process holds the job's lock file now, probed with flock (what filelock takes) and not
    kept; without filelock's import, for the quick path. A missing file is a lock nobody took here yet."""
    import fcntl
    import os

    try:
        fd = os.open(lock_path(directory, job), os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the probe's lock with its descriptor
    return False


class _FileHeld:
    def __init__(self, lock: Any) -> None:
        self._lock = lock

    def verify(self, conn: Any) -> None:
        """flock cannot be lost while the process lives."""

    def check(self) -> None:
        """Nothing to check: see verify."""

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release(force=True)
            self._lock = None


class FileLockBackend:
    """Lock files are created 0600 in a 0700 folder (jobs.files): only the cron user can take them."""

    name = "file"
    crash_bound = "0 s: the kernel releases flock the moment the holder dies"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def try_acquire(self, job: str, ttl: timedelta) -> _FileHeld | None:
        from filelock import FileLock, Timeout

        from ..files import private_directory, private_file

        path = lock_path(self.directory, job)
        try:
            private_directory(self.directory)
            private_file(path)
        except OSError as exc:
            raise ConfigError(f"[locks] directory: cannot create {exc.filename or path}: {exc.strerror}") from None
        lock = FileLock(
            str(path),
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
        except OSError as exc:
            raise ConfigError(f"[locks] directory: cannot open {path}: {exc.strerror} (the lock directory and its "
                              f"files must belong to the user that runs the jobs)") from None
        return _FileHeld(lock)

    def unlock(self, job: str, ttl: timedelta) -> Unlocked:
        """The kernel frees a dead holder's flock: nothing is ever stale."""
        return probe_unlock(self, job, ttl)
