"""SQLite files: private when the tool creates them, each problem named with its path (exit 78), and commands
that only read work on a database this user may read but not write.

Root ignores file modes, so the permission tests run the CLI as a real unprivileged user (nobody, through
setpriv) in a folder outside pytest's private temporary tree.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CI, REPO, Workspace

NOBODY = 65534


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Path]:
    """A folder another user can enter (pytest's tmp_path sits in a 0700 tree)."""
    folder = Path(tempfile.mkdtemp(prefix="cw-files-"))
    folder.chmod(0o755)
    yield folder
    folder.chmod(0o755)
    shutil.rmtree(folder, ignore_errors=True)


def as_user(folder: Path, url: str, *args: str, umask: int | None = None) -> subprocess.CompletedProcess:
    """The CLI as an unprivileged user: nobody when the tests run as root, else the current user."""
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.fail("the permission tests need setpriv (util-linux) to drop root")
        prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONWARDEN_")}
    env.update(CRONWARDEN_DATABASE_URL=url, PYTHONPATH=str(REPO), NO_COLOR="1", PYTHONDONTWRITEBYTECODE="1",
               HOME=str(folder))
    return subprocess.run([*prefix, sys.executable, "-m", "cli", *args], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=60, preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


def owned_by_user(path: Path) -> None:
    if os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)


def test_the_database_its_wal_and_shm_lock_files_and_outbox_are_private_even_with_umask_0(shared):
    data = shared / "data"
    data.mkdir()
    owned_by_user(data)
    url = f"sqlite:///{data}/app/cronwarden.db"
    config = shared / "cronwarden.toml"
    config.write_text(f'[jobs.email-queue]\ntransport = "file"\nfile_directory = "{data}/outbox"\n')
    assert as_user(data, url, "--config", str(config), "db", "upgrade", "--app-tables", umask=0).returncode == 0
    database = data / "app" / "cronwarden.db"
    with sqlite3.connect(database) as conn:
        conn.execute("INSERT INTO email_queue (to_address, subject, body) VALUES ('a@example.com', 'Hi', 'x')")
    sent = as_user(data, url, "--config", str(config), "email-queue", umask=0)
    assert sent.returncode == 0, sent.stderr
    assert mode(data / "app") == 0o700 and mode(database) == 0o600
    assert mode(data / "app" / "locks") == 0o700 and mode(data / "app" / "locks" / "email-queue.lock") == 0o600
    assert mode(data / "outbox") == 0o700
    assert [mode(eml) for eml in (data / "outbox").glob("*.eml")] == [0o600]
    held = sqlite3.connect(database)  # SQLite gives -wal and -shm the database file's mode
    held.execute("SELECT count(*) FROM email_queue").fetchall()
    try:
        assert mode(Path(f"{database}-wal")) == 0o600 and mode(Path(f"{database}-shm")) == 0o600
    finally:
        held.close()


def test_a_folder_the_user_cannot_write_is_named(shared):
    shared.chmod(0o555)
    result = as_user(shared, f"sqlite:///{shared}/cronwarden.db", "db", "upgrade")
    assert result.returncode == 78
    assert result.stderr.strip().splitlines() == [
        f"cronwarden: error: configuration: SQLite database {shared}/cronwarden.db: its folder {shared} is not "
        f"writable by {_who()} (SQLite creates the database and its -wal and -shm files there; see "
        f"docs/deploy.md for who owns it)"]


def test_a_missing_folder_the_user_cannot_create_is_named(shared):
    shared.chmod(0o555)
    result = as_user(shared, f"sqlite:///{shared}/var/cronwarden.db", "db", "upgrade")
    assert result.returncode == 78
    assert (f"SQLite database {shared}/var/cronwarden.db: its folder {shared}/var does not exist and {_who()} "
            f"cannot create it") in result.stderr
    assert not (shared / "var").exists()


def test_a_file_that_is_not_a_database_is_named(shared):
    (shared / "cronwarden.db").write_text("not a database, a text file that happens to be here\n")
    owned_by_user(shared / "cronwarden.db")
    owned_by_user(shared)
    for command in ("check", "refresh-token-cleanup"):
        result = as_user(shared, f"sqlite:///{shared}/cronwarden.db", command)
        assert result.returncode == 78, result.stderr
        assert f"SQLite database {shared}/cronwarden.db: is not a SQLite database file" in result.stderr


@pytest.fixture
def root_owned_database(shared) -> Path:
    """A database with a finished run, in a folder and file the unprivileged user may read but not write."""
    ws = Workspace(shared, f"sqlite:///{shared}/cronwarden.db")
    ws.write_config('[jobs.log-cleanup]\ntable = ""\nhistory = "all"\n')
    if os.geteuid() != 0:
        if CI:
            raise RuntimeError("the read-only SQLite tests must run under CI=true, as root (they drop to nobody)")
        pytest.skip("needs a second user: run as root (the tests drop to nobody)")
    done = ws.upgrade().run("log-cleanup")
    assert done.returncode == 0, done.stderr
    (shared / "cronwarden.toml").unlink()
    (shared / "cronwarden.db").chmod(0o644)
    return shared / "cronwarden.db"


SHOWN = [(("status",), "succeeded"), (("check",), "OK: 5 jobs"), (("history",), "log-cleanup"),
         (("metrics",), 'job_name="log-cleanup"'), (("queue", "list"), "")]


@pytest.mark.parametrize("command, shows", SHOWN, ids=[" ".join(command) for command, _ in SHOWN])
def test_read_only_commands_read_a_database_they_cannot_write(root_owned_database, command, shows):
    folder = root_owned_database.parent
    result = as_user(folder, f"sqlite:///{root_owned_database}", *command)
    assert result.returncode == 0, result.stderr
    assert shows in result.stdout
    assert sorted(os.listdir(folder)) == ["cronwarden.db", "locks"]


def test_read_only_commands_see_the_latest_commits_while_a_writer_holds_the_wal(root_owned_database):
    writer = sqlite3.connect(root_owned_database)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("UPDATE recurring_job_executions SET last_error = 'seen through the WAL'")
    writer.commit()
    try:
        os.chmod(f"{root_owned_database}-wal", 0o644)
        os.chmod(f"{root_owned_database}-shm", 0o644)
        result = as_user(root_owned_database.parent, f"sqlite:///{root_owned_database}", "status", "--json")
    finally:
        writer.close()
    assert result.returncode == 0, result.stderr
    assert "seen through the WAL" in result.stdout


def test_a_job_run_on_a_database_it_cannot_write_is_named(root_owned_database):
    result = as_user(root_owned_database.parent, f"sqlite:///{root_owned_database}", "log-cleanup", "--force")
    assert result.returncode == 78
    assert f"SQLite database {root_owned_database}: its folder {root_owned_database.parent} is not writable" \
        in result.stderr


def _who() -> str:
    import pwd

    return f"user {pwd.getpwuid(NOBODY if os.geteuid() == 0 else os.geteuid()).pw_name}"

@pytest.mark.slow

def test_following_docs_deploy_verbatim_gives_the_cron_user_its_database(shared):
    """docs/deploy.md's install lines and SQLite env lines, run under a scratch root (paths rerooted, the cron
    user played by nobody), then `db upgrade`, a job and `check` as that user through the env file."""
    if os.geteuid() != 0:
        pytest.skip("install -o needs root")
    root = shared / "root"

    def rerooted(line: str) -> str:
        line = line.replace(" /etc/", f" {root}/etc/").replace(" /var/", f" {root}/var/")
        return line.replace("=sqlite:////var/", f"=sqlite:///{root}/var/").replace("=/var/", f"={root}/var/")

    doc = (REPO / "docs" / "deploy.md").read_text()
    installs = [line.split("  #")[0] for line in doc.splitlines() if line.startswith("install ")]
    exports = [line.strip() for line in doc.splitlines() if line.strip().startswith("export CRONWARDEN_")]
    assert len(installs) == 2 and any("sqlite:////var/lib/cronwarden/" in line for line in exports)
    for line in installs:
        subprocess.run(rerooted(line).replace("cronwarden -g cronwarden", f"{NOBODY} -g {NOBODY}").split(),
                       check=True)
    env_file = root / "etc" / "cronwarden" / "cronwarden.env"
    env_file.write_text("".join(rerooted(line) + "\n" for line in exports))
    folder = root / "var" / "lib" / "cronwarden"
    for command in ("db upgrade --app-tables", "refresh-token-cleanup", "check"):
        result = subprocess.run(  # sudo -u cronwarden bash -c '. cronwarden.env && cronwarden ...'
            ["bash", "-c", f". {env_file} && exec setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups "
                           f"{sys.executable} -m cli {command}"],
            cwd=folder, capture_output=True, text=True, timeout=60,
            env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "HOME": str(folder), "NO_COLOR": "1",
                 "PYTHONDONTWRITEBYTECODE": "1"})
        assert result.returncode == 0, (command, result.stderr)
    database = folder / "cronwarden.db"
    assert folder.stat().st_uid == NOBODY and database.stat().st_uid == NOBODY and mode(database) == 0o600
    assert (folder / "locks" / "refresh-token-cleanup.lock").stat().st_uid == NOBODY

@pytest.mark.slow

def test_a_read_only_database_file_in_a_writable_folder_is_named(root_owned_database):
    folder = root_owned_database.parent
    owned_by_user(folder)
    (folder / "locks").chmod(0o777)
    lock = as_user(folder, f"sqlite:///{root_owned_database}", "log-cleanup", "--force")
    assert lock.returncode == 78
    assert f"[locks] directory: cannot open {folder}/locks/log-cleanup.lock: Permission denied" in lock.stderr
    (folder / "locks" / "log-cleanup.lock").unlink()
    (folder / "rows-off.toml").write_text('[jobs.log-cleanup]\ntable = ""\n')
    job = as_user(folder, f"sqlite:///{root_owned_database}", "--config", "rows-off.toml", "log-cleanup", "--force")
    assert job.returncode == 78
    assert f"SQLite database {root_owned_database}: is read-only for {_who()}" in job.stderr
    status = as_user(folder, f"sqlite:///{root_owned_database}", "status")
    assert status.returncode == 0 and "succeeded" in status.stdout, status.stderr


def on_read_only_mount(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI as root, with `folder` bind-mounted read-only in a mount namespace of its own (root obeys that)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a read-only bind mount needs root and unshare (util-linux)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONWARDEN_")}
    env.update(PYTHONPATH=str(REPO), NO_COLOR="1", PYTHONDONTWRITEBYTECODE="1")
    script = (f'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec {sys.executable} -m cli "$@"')
    return subprocess.run(["unshare", "-m", "sh", "-c", script, str(folder), *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=60)

@pytest.mark.slow

def test_a_database_on_a_read_only_mount_is_read_by_read_only_commands_and_named_for_a_job(root_owned_database):
    folder = root_owned_database.parent
    url = f"sqlite:///{root_owned_database}"
    status = on_read_only_mount(folder, "--database-url", url, "status")
    assert status.returncode == 0 and "succeeded" in status.stdout, status.stderr
    job = on_read_only_mount(folder, "--database-url", url, "refresh-token-cleanup")
    assert job.returncode == 78
    assert f"SQLite database {root_owned_database}: its folder {folder} is on a read-only file system" in job.stderr
    fresh = on_read_only_mount(folder, "--database-url", f"sqlite:///{folder}/other.db", "db", "upgrade")
    assert fresh.returncode == 78 and f"its folder {folder} is on a read-only file system" in fresh.stderr
