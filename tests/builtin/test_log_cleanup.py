"""log-cleanup: old rows in batches; old matching regular files only (no symlink, folder or sub-folder); skips."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import time_machine
from sqlalchemy import insert, select, text

from jobs.app_tables import default_metadata

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
CUTOFF = NOW - timedelta(days=30)
logs = default_metadata().tables["logs"]


def _run(cli, ws, *args: str, code: int = 0) -> dict:
    with time_machine.travel(NOW, tick=False):
        result = cli(ws, "log-cleanup", "--force", "--json", *args)
    assert result.exit_code == code, result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else {"stderr": result.stderr}


def _add_rows(engine, rows: dict[str, datetime]) -> None:
    with engine.begin() as conn:
        conn.execute(insert(logs), [{"level": "INFO", "message": name, "created_at": at} for name, at in rows.items()])


def _messages(engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(logs.c.message)).scalars())


def _file(path: Path, written: datetime, size: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (written.timestamp(), written.timestamp()))
    return path


def _tree(ws) -> set[str]:
    """Every path under the workspace's logs/ and outside/ folders, symlinks not followed."""
    found = set()
    for top in ("logs", "outside"):
        for root, dirs, files in os.walk(ws.path / top):
            found.update(str(Path(root, n).relative_to(ws.path)) for n in dirs + files)
    return found


@pytest.fixture
def unremovable(monkeypatch: pytest.MonkeyPatch):
    """Make one file impossible to remove, for real where we can.

    As root, a folder without write permission does not stop unlink, so the file gets the
    immutable attribute (chattr +i: unlink fails with EPERM even for root). Only where that is
    not available (not root, or a file system without the attribute) is os.unlink mocked,
    for this one file name and nothing else.
    """
    pinned: list[Path] = []

    def pin(path: Path) -> str:
        if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(path)],
                                                     capture_output=True).returncode == 0:
            pinned.append(path)
            return "chattr"
        real_unlink = os.unlink

        def unlink(target, *args, **kwargs):
            if os.path.basename(os.fspath(target)) == path.name:
                raise PermissionError(1, "Operation not permitted")
            return real_unlink(target, *args, **kwargs)

        monkeypatch.setattr(os, "unlink", unlink)
        return "mock"

    yield pin
    for path in pinned:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_deletes_exactly_the_rows_created_before_the_cutoff(workspace, engine, cli):
    _add_rows(engine, {"ancient": NOW - timedelta(days=400), "just-past": CUTOFF - timedelta(microseconds=1),
                       "at-cutoff": CUTOFF, "just-inside": CUTOFF + timedelta(seconds=1), "today": NOW})
    report = _run(cli, workspace)
    assert _messages(engine) == {"at-cutoff", "just-inside", "today"}
    assert report["counts"]["rows_deleted"] == 2


def test_deletes_rows_in_bounded_batches_and_a_second_run_deletes_nothing(workspace, engine, cli):
    _add_rows(engine, {f"old{i}": CUTOFF - timedelta(seconds=5 + i) for i in range(250)}
              | {f"new{i}": CUTOFF + timedelta(seconds=5 + i) for i in range(30)})
    report = _run(cli, workspace, "--batch-size", "100")
    # batches of at most 100 rows: 3 transactions, more if a slow batch made the adaptive size smaller
    assert report["counts"]["rows_deleted"] == 250 and report["largest_batch_items"] <= 100
    assert report["transactions"] >= 3
    assert _messages(engine) == {f"new{i}" for i in range(30)}
    assert _run(cli, workspace)["counts"]["rows_deleted"] == 0
    assert len(_messages(engine)) == 30


def test_dry_run_reports_the_same_row_count_and_deletes_nothing(workspace, engine, cli):
    _add_rows(engine, {f"old{i}": CUTOFF - timedelta(hours=1 + i) for i in range(7)} | {"new": NOW})
    report = _run(cli, workspace, "--dry-run", "--batch-size", "3")
    assert report["status"] == "dry_run" and report["counts"]["rows_deleted"] == 7
    assert len(_messages(engine)) == 8
    assert _run(cli, workspace)["counts"]["rows_deleted"] == 7


def test_table_and_column_names_are_configurable(workspace, engine, cli):
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE audit_trail (id INTEGER PRIMARY KEY, logged TIMESTAMP NULL)"))
        conn.execute(text("INSERT INTO audit_trail (id, logged) VALUES (1, :old), (2, :new)"),
                     {"old": datetime(2026, 1, 1), "new": datetime(2026, 5, 31)})
    workspace.write_config('[jobs.log-cleanup]\ntable = "audit_trail"\ncreated_column = "logged"\n')
    assert _run(cli, workspace)["counts"]["rows_deleted"] == 1
    with engine.connect() as conn:
        assert list(conn.execute(text("SELECT id FROM audit_trail")).scalars()) == [2]


def _log_folder(ws) -> dict[str, Path]:
    """Old and new, matching and not, a symlink to an old file outside, a folder named old.log, a sub-folder."""
    logs_dir, outside = ws.path / "logs", ws.path / "outside"
    old, new = NOW - timedelta(days=45), NOW - timedelta(days=2)
    paths = {
        "old": _file(logs_dir / "app-old.log", old, 120),
        "old2": _file(logs_dir / ".hidden-old.log", old, 30),
        "just-past": _file(logs_dir / "just-past.log", CUTOFF - timedelta(seconds=1), 7),
        "just-inside": _file(logs_dir / "just-inside.log", CUTOFF + timedelta(seconds=1)),
        "new": _file(logs_dir / "app-new.log", new),
        "old-txt": _file(logs_dir / "notes-old.txt", old),
        "old-gz": _file(logs_dir / "app-old.log.gz", old),
        "nested": _file(logs_dir / "archive" / "nested-old.log", old),
        "target": _file(outside / "elsewhere.log", old),
    }
    (logs_dir / "old.log").mkdir()
    os.utime(logs_dir / "old.log", (old.timestamp(), old.timestamp()))
    os.utime(logs_dir / "archive", (old.timestamp(), old.timestamp()))
    for name, target in (("link-out.log", paths["target"]), ("dangling.log", outside / "missing.log")):
        (logs_dir / name).symlink_to(target)
        os.utime(logs_dir / name, (old.timestamp(), old.timestamp()), follow_symlinks=False)
    return paths


def test_removes_exactly_the_old_matching_regular_files_and_nothing_else(sqlite_workspace, cli):
    ws = sqlite_workspace
    _log_folder(ws)
    before = _tree(ws)
    report = _run(cli, ws)
    removed = {"logs/app-old.log", "logs/.hidden-old.log", "logs/just-past.log"}
    assert _tree(ws) == before - removed
    assert (ws.path / "logs" / "link-out.log").is_symlink() and (ws.path / "outside" / "elsewhere.log").exists()
    assert (ws.path / "logs" / "old.log").is_dir()
    assert report["counts"] == {"rows_deleted": 0, "files_deleted": 3, "files_skipped": 0, "bytes_freed": 157}


def test_a_second_run_removes_nothing_more(sqlite_workspace, cli):
    ws = sqlite_workspace
    _log_folder(ws)
    _run(cli, ws)
    after_first = _tree(ws)
    assert _run(cli, ws)["counts"]["files_deleted"] == 0
    assert _tree(ws) == after_first


def test_dry_run_lists_each_file_reports_the_same_counts_and_removes_nothing(sqlite_workspace, cli):
    ws = sqlite_workspace
    _log_folder(ws)
    before = _tree(ws)
    report = _run(cli, ws, "--dry-run")
    assert report["status"] == "dry_run" and _tree(ws) == before
    listed = sorted(d for d in report["details"] if d.startswith("would delete logs/"))
    assert listed == ["would delete logs/.hidden-old.log (30 bytes)", "would delete logs/app-old.log (120 bytes)",
                      "would delete logs/just-past.log (7 bytes)"]
    assert report["counts"] == _run(cli, ws)["counts"]


def test_a_file_that_cannot_be_removed_is_skipped_and_reported(sqlite_workspace, cli, unremovable):
    ws = sqlite_workspace
    paths = _log_folder(ws)
    stuck = _file(ws.path / "logs" / "stuck-old.log", NOW - timedelta(days=90))
    unremovable(stuck)
    report = _run(cli, ws)
    assert stuck.exists() and not paths["old"].exists() and not paths["just-past"].exists()
    assert report["status"] == "succeeded"
    assert report["counts"]["files_deleted"] == 3 and report["counts"]["files_skipped"] == 1
    assert report["details"] == ["skipped logs/stuck-old.log: Operation not permitted"]
    assert _run(cli, ws)["counts"] == {"rows_deleted": 0, "files_deleted": 0, "files_skipped": 1,
                                       "bytes_freed": 0}


def test_a_missing_log_directory_is_not_an_error(sqlite_workspace, cli):
    sqlite_workspace.write_config('[jobs.log-cleanup]\nlog_directory = "no-such-folder"\n')
    report = _run(cli, sqlite_workspace)
    assert report["status"] == "succeeded" and report["counts"]["files_deleted"] == 0
    assert report["details"] == ["log directory no-such-folder does not exist: no files to delete"]


def test_pattern_and_retention_options_select_the_files(sqlite_workspace, cli):
    ws = sqlite_workspace
    _log_folder(ws)
    ws.write_config('[jobs.log-cleanup]\nlog_file_pattern = "*.txt"\n')
    assert _run(cli, ws)["counts"]["files_deleted"] == 1
    assert not (ws.path / "logs" / "notes-old.txt").exists() and (ws.path / "logs" / "app-old.log").exists()
    ws.write_config("")
    assert _run(cli, ws, "--retention-days", "1")["counts"]["files_deleted"] == 5
    assert (ws.path / "logs" / "old.log").is_dir() and (ws.path / "outside" / "elsewhere.log").exists()


@pytest.mark.parametrize("config, problem", [
    ('log_file_pattern = "../*.log"', "log_file_pattern"),
    ('log_file_pattern = "archive/*.log"', "log_file_pattern"),
    ('log_file_pattern = ".."', "log_file_pattern"),
    ('log_file_pattern = ""', "log_file_pattern"),
    ("retention_days = 0", "retention_days"),
])
@pytest.mark.backend_neutral
def test_a_bad_pattern_or_retention_is_a_configuration_error_and_touches_nothing(workspace, engine, cli, config,
                                                                                   problem):
    _log_folder(workspace)
    _add_rows(engine, {"ancient": NOW - timedelta(days=400)})
    before = _tree(workspace)
    workspace.write_config(f"[jobs.log-cleanup]\n{config}\n")
    err = _run(cli, workspace, code=78)["stderr"]
    assert problem in err and err.count("\n") == 1
    assert _tree(workspace) == before and _messages(engine) == {"ancient"}


def test_a_stop_request_ends_the_sweep_at_a_checkpoint_with_true_counts(sqlite_workspace, cli, monkeypatch):
    from jobs.context import JobContext
    from jobs.errors import Interrupted

    ws = sqlite_workspace
    for i in range(1000):
        _file(ws.path / "logs" / f"f{i:04d}.log", NOW - timedelta(days=60), 10)
    ws.write_config('[jobs.log-cleanup]\ntable = ""\n')
    real_checkpoint = JobContext.checkpoint

    def checkpoint(self) -> None:
        """SIGTERM arrives once the sweep has removed some files."""
        real_checkpoint(self)
        if len(os.listdir(ws.path / "logs")) < 1000:
            raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(JobContext, "checkpoint", checkpoint)
    report = _run(cli, ws, code=143)
    left = len(os.listdir(ws.path / "logs"))
    assert report["status"] == "interrupted"
    assert 0 < left < 1000 and report["counts"]["files_deleted"] == 1000 - left
    assert report["counts"]["bytes_freed"] == 10 * (1000 - left)
