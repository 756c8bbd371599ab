"""Files and folders the tool creates are private to its user: 0600 files, 0700 folders (the umask may
only make them stricter). They hold user data (the SQLite database, queued emails) or steer jobs (locks)."""

from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


def private_directory(path: Path) -> None:
    """Create the folder and its missing parents, each 0700; an existing folder is left as it is."""
    missing = []
    for candidate in (path, *path.parents):
        if os.path.isdir(candidate):
            break
        missing.append(candidate)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIRECTORY_MODE)
        except FileExistsError:
            if not os.path.isdir(folder):
                raise


def private_file(path: Path) -> bool:
    """Create an empty 0600 file unless one exists (never truncates); returns whether it created it."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), FILE_MODE))
    except FileExistsError:
        return False
    return True


def atomic_write(target: Path, data: bytes | str, *, mode: int = FILE_MODE) -> None:
    """Replace target so that readers see the old file or the whole new one, never a half-written one.

    The temporary file sits in the target's folder (os.replace is atomic only within one file system),
    starts with a dot and ends in .tmp, so collectors that glob for *.prom or *.eml ignore it.
    """
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
