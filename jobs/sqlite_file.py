"""The embedded SQLite database file: private when the tool creates it, never created by a command that
only reads (opened read-only where this user cannot write it), and each problem with it named in one line."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError
from .files import private_directory, private_file

FIX = "run `cronwarden db upgrade` to create it, or set CRONWARDEN_DATABASE_URL to the right database"
MARKERS = ("unable to open database file", "readonly database", "file is not a database")


def prepare(path: Path) -> None:
    """For a command that writes: the folder (0700) and an empty database file (0600) when missing.

    SQLite gives the -wal and -shm files the database file's mode, so they are private too; an empty
    file is a valid empty database.
    """
    try:
        private_directory(path.parent)
        private_file(path)
    except OSError as exc:
        raise problem(path, exc) from None


def reader_uri(path: Path, safe_url: str) -> str:
    """For a command that only reads: an SQLite URI that never creates the file.

    Read-write when this user can write the file and its folder (the WAL needs -wal and -shm beside
    it); read-only otherwise, and `immutable` when no -wal file exists (WAL mode cannot open read-only
    without creating -shm; with no -wal the database file holds every committed transaction).
    """
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise missing(path, safe_url) from None
    except OSError as exc:
        raise problem(path, exc) from None
    if not os.path.isfile(path):
        raise problem(path, FileNotFoundError())
    from urllib.parse import quote

    uri = "file:" + quote(str(path.resolve()))
    if _can_write(path):
        return uri + "?mode=rw"
    if not os.access(path, os.R_OK):
        raise problem(path, PermissionError())
    if Path(f"{path}-wal").exists():
        return uri + "?mode=ro"
    return uri + "?mode=ro&immutable=1"


def missing(path: Path, safe_url: str) -> ConfigError:
    where = "" if path.is_absolute() else f" ({os.path.abspath(path)})"
    return ConfigError(f"database {safe_url}{where} does not exist: {FIX}")


def _can_write(path: Path) -> bool:
    return os.access(path, os.R_OK | os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)


def is_file_problem(exc: BaseException) -> bool:
    text = str(getattr(exc, "orig", None) or exc).lower()
    return any(marker in text for marker in MARKERS)


def problem(path: Path, exc: BaseException) -> ConfigError:
    """What is wrong with the file or its folder, for this user, in one line (exit 78)."""
    folder = path.parent if str(path.parent) else Path(".")
    who = _user()
    text = str(getattr(exc, "orig", None) or exc).lower()
    exists, isdir, isfile = os.path.exists, os.path.isdir, os.path.isfile
    if not os.access(folder, os.X_OK):
        what = (f"its folder {folder} is not accessible to {who}" if exists(folder)
                else f"its folder {folder} does not exist and {who} cannot create it")
    elif not exists(path) and not isdir(folder):
        what = f"its folder {folder} does not exist and {who} cannot create it"
    elif exists(path) and not isfile(path):
        what = "is not a file"
    elif exists(path) and not os.access(path, os.R_OK):
        what = f"is not readable by {who}"
    elif "not a database" in text or not _looks_like_sqlite(path):
        what = "is not a SQLite database file (check database_url / CRONWARDEN_DATABASE_URL)"
    elif _read_only_mount(folder):
        what = f"its folder {folder} is on a read-only file system"
    elif not os.access(folder, os.W_OK):
        what = (f"its folder {folder} is not writable by {who} (SQLite creates the database and its -wal "
                f"and -shm files there; see docs/deploy.md for who owns it)")
    elif exists(path) and not os.access(path, os.W_OK):
        what = f"is read-only for {who}"
    else:
        what = f"cannot be opened: {text}"
    return ConfigError(f"SQLite database {path}: {what}")


def _read_only_mount(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _looks_like_sqlite(path: Path) -> bool:
    """An empty file is a valid empty database; anything else starts with SQLite's header."""
    if not os.path.isfile(path):
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return True
    return head in (b"", b"SQLite format 3\x00")


def _user() -> str:
    uid = os.geteuid()
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name}"
    except (ImportError, KeyError):
        return f"uid {uid}"
