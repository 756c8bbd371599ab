"""Delete log rows and log files older than `retention_days`.

Rows: batches of at most `batch_size` rows in (created_column, key_column)
order, one short transaction each, bounded in the database (no row loaded into
Python) whatever the timestamps: a burst of lines stored at one-second precision
is taken a batch at a time (jobs.batches). Batches start at FIRST_BATCH rows and
adapt to stay within TARGET_SECONDS.

Files: one pass over `log_directory` (not its sub-folders) with the directory
opened once and every name resolved against it (scandir, lstat and unlink
with dir_fd), so a renamed or re-pointed path cannot redirect the sweep. Only
regular files (checked again by lstat just before removal) whose own mtime
is before the cutoff and whose name matches `log_file_pattern` go; symlinks
are never followed nor removed, and directories are never removed. A file
that cannot be removed is reported and skipped. The configured directory
itself may be a symlink: the operator chose it.

A dry run counts the same rows and files and lists each file; it cannot
know which removals would fail, so a file a real run skips counts there as
deleted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cronwarden import JobSpec, PermanentError, identifier, setting

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see jobs/__init__.py)
if TYPE_CHECKING:
    from cronwarden import JobContext

TARGET_SECONDS = (0.1, 0.2)
"""A row batch faster than this range lets the next one grow, a slower one shrinks it."""
FIRST_BATCH = 5_000
"""Rows at most in the first batch; later ones grow from it up to batch_size."""
CHECKPOINT_EVERY = 256
"""Directory entries between two checkpoints (SIGTERM, timeout) and counter updates."""
CHUNK = 50_000
"""Candidates read before they are handled in inode order, as find's fts does in big folders: on disk,
inode order keeps the inode table reads and writes sequential (measured 10-30 % faster than readdir order)."""


def _table_or_empty(value: str) -> str | None:
    return None if value == "" else identifier(value)


def _plain_pattern(value: str) -> str | None:
    """A file-name pattern only: nothing that could reach outside log_directory."""
    if not value:
        return "must not be empty"
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    if any(sep in value for sep in separators) or ".." in value:
        return f"must be a file-name pattern without a path separator or '..', got {value!r}"
    return None


@dataclass(frozen=True)
class Settings:
    """The job's own keys, in `[jobs.log-cleanup]`."""

    retention_days: int = setting(30, min=1, max=36500, cli=True,
                                  help="Delete rows and files older than this.")
    batch_size: int = setting(10_000, min=1, max=1_000_000, cli=True, help="Rows per transaction.")
    table: str = setting("logs", check=_table_or_empty,
                         help='The log table ("" to clean files only).')
    created_column: str = setting("created_at", check=identifier, help="Its creation timestamp column (UTC).")
    key_column: str = setting("id", check=identifier,
                              help="Its primary key: the order among rows created at the same time.")
    log_directory: Path = setting(Path("logs"), help="The folder whose old log files are deleted (not recursive).")
    log_file_pattern: str = setting("*.log", check=_plain_pattern,
                                    help="Shell pattern for the file names to delete, e.g. \"*.log\".")


def run(ctx: JobContext, s: Settings) -> None:
    cutoff = ctx.cutoff(s.retention_days)
    for name in ("rows_deleted", "files_deleted", "files_skipped", "bytes_freed"):
        ctx.count(name, 0)
    if s.table:
        _delete_rows(ctx, s, cutoff)
    _sweep_files(ctx, s, cutoff)


def _delete_rows(ctx: JobContext, s: Settings, cutoff: datetime) -> None:
    from cronwarden import BatchSize, oldest_first, ref

    logs = ref(s.table, times=(s.created_column,), others=(s.key_column,))
    created, key = logs.c[s.created_column], logs.c[s.key_column]
    size = BatchSize(s.batch_size, FIRST_BATCH, TARGET_SECONDS)
    ctx.in_batches(oldest_first, size, logs, created, key, cutoff, dry_run=ctx.dry_run,
                   tally=lambda result: {"rows_deleted": result[0]})
    if ctx.dry_run:
        ctx.detail(f"would delete {ctx.counts['rows_deleted']} rows of {s.table} created before "
                   f"{cutoff.isoformat()}")


def _sweep_files(ctx: JobContext, s: Settings, cutoff: datetime) -> None:
    import fnmatch
    import re
    import stat

    directory = s.log_directory
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        ctx.detail(f"log directory {directory} does not exist: no files to delete")
        return
    except NotADirectoryError:
        raise PermanentError(f"log_directory {directory} is not a directory") from None
    except PermissionError:
        raise PermanentError(f"log_directory {directory}: permission denied") from None
    matches = re.compile(fnmatch.translate(s.log_file_pattern)).match
    limit = cutoff.timestamp()
    dry_run = ctx.dry_run
    files = skipped = freed = steps = 0
    try:
        with os.scandir(dir_fd) as entries:
            while True:
                chunk: list[tuple[int, str]] = []
                for entry in entries:
                    steps += 1
                    if steps % CHECKPOINT_EVERY == 0:
                        files, skipped, freed = _flush(ctx, files, skipped, freed)
                        ctx.checkpoint()
                    if matches(entry.name) and entry.is_file(follow_symlinks=False):
                        chunk.append((entry.inode(), entry.name))
                        if len(chunk) == CHUNK:
                            break
                if not chunk:
                    break
                chunk.sort()
                for _, name in chunk:
                    steps += 1
                    if steps % CHECKPOINT_EVERY == 0:
                        files, skipped, freed = _flush(ctx, files, skipped, freed)
                        ctx.checkpoint()
                    try:
                        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if info.st_mtime >= limit or not stat.S_ISREG(info.st_mode):
                        continue
                    if dry_run:
                        ctx.detail(f"would delete {directory / name} ({info.st_size} bytes)")
                    else:
                        try:
                            os.unlink(name, dir_fd=dir_fd)
                        except OSError as exc:
                            skipped += 1
                            reason = "vanished before removal" if isinstance(exc, FileNotFoundError) else \
                                (exc.strerror or type(exc).__name__)
                            ctx.detail(f"skipped {directory / name}: {reason}")
                            continue
                    files += 1
                    freed += info.st_size
    finally:
        os.close(dir_fd)
        _flush(ctx, files, skipped, freed)


def _flush(ctx: JobContext, files: int, skipped: int, freed: int) -> tuple[int, int, int]:
    """Hand the file counters to the context (a few hundred files at a time keeps the loop cheap)."""
    if files:
        ctx.count("files_deleted", files)
    if skipped:
        ctx.count("files_skipped", skipped)
    if freed:
        ctx.count("bytes_freed", freed, progress=False)
    return 0, 0, 0


JOB = JobSpec(
    name="log-cleanup",
    run=run,
    settings=Settings,
    schedule="24h",
    description="Delete log rows and log files (log_directory, log_file_pattern) older than retention_days.",
    needs=lambda s: {s.table: (s.created_column,)} if s.table else {},
)
