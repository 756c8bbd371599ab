"""The README's "Your own jobs" example, as written there, runs as an installed plugin job on SQLite and PostgreSQL.

The code and the entry point are taken from README.md itself, so the example cannot drift from what runs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BATCH = 500
OLD_TIE, OLD_SPREAD, RECENT = 1_300, 700, 400  # the tie is longer than a batch: it spans several


def readme_block(language: str, first_line: str) -> str:
    """The README's fenced `language` block whose first line is `first_line`."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"^```{language}\n({re.escape(first_line)}\n.*?)^```$", text, re.MULTILINE | re.DOTALL)
    assert match, f"README.md has no {language} block starting with {first_line!r}"
    return match.group(1)


@pytest.fixture
def myapp(tmp_path: Path) -> Path:
    """A site folder holding the README's myapp package and its entry point, as `pip install` would leave it."""
    site = tmp_path / "site"
    (site / "myapp").mkdir(parents=True)
    (site / "myapp" / "__init__.py").write_text("", encoding="utf-8")
    (site / "myapp" / "maintenance.py").write_text(readme_block("python", "# myapp/maintenance.py"),
                                                   encoding="utf-8")
    project = tomllib.loads(readme_block("toml", "# myapp's pyproject.toml"))
    entries = project["project"]["entry-points"]["cronwarden.jobs"]
    dist = site / "myapp-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myapp\nVersion: 0.1\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text(
        "[cronwarden.jobs]\n" + "".join(f"{name} = {target}\n" for name, target in entries.items()), encoding="utf-8")
    return site


def _table():
    from sqlalchemy import Column, DateTime, Index, Integer, MetaData, Table

    return Table("sessions", MetaData(), Column("id", Integer, primary_key=True),
                 Column("seen_at", DateTime, nullable=False), Index("ix_sessions_seen_at", "seen_at"))


def _sessions(url: str) -> None:
    """The application's sessions table (index on seen_at): old rows, a tie among them, and recent ones."""
    from sqlalchemy import create_engine, insert

    sessions = _table()
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    rows = ([now - timedelta(days=45)] * OLD_TIE
            + [now - timedelta(days=31, minutes=i) for i in range(OLD_SPREAD)]
            + [now - timedelta(days=29, minutes=i) for i in range(RECENT)])
    engine = create_engine(url)
    with engine.begin() as conn:
        sessions.drop(conn, checkfirst=True)
        sessions.create(conn)
        # ids out of seen_at order, as sessions seen again later have
        conn.execute(insert(sessions), [{"id": 7919 * n % 100_003, "seen_at": seen} for n, seen in enumerate(rows)])
    engine.dispose()


def _left(url: str) -> tuple[int, int]:
    """(sessions left, of which seen more than 30 days ago)."""
    from sqlalchemy import case, create_engine, func, select

    sessions = _table()
    old = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(days=30)
    engine = create_engine(url)
    with engine.connect() as conn:
        total, stale = conn.execute(select(func.count(), func.count(case((sessions.c.seen_at < old, 1))))).one()
    engine.dispose()
    return total, stale


def _cli(url: str, site: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "cronwarden.toml").touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONWARDEN_")}
    env.update(CRONWARDEN_DATABASE_URL=url, CRONWARDEN_CONFIG=str(tmp_path / "cronwarden.toml"),
               CRONWARDEN_LOCK_DIR=str(tmp_path / "locks"), NO_COLOR="1",
               PYTHONPATH=os.pathsep.join([str(REPO), str(site)]))
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_readme_plugin_job_deletes_old_sessions_in_bounded_batches(database, myapp, tmp_path, request):
    url = request.getfixturevalue({"sqlite": "sqlite_url", "postgres": "pg_url"}[database])
    upgraded = _cli(url, myapp, tmp_path, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    _sessions(url)
    old = OLD_TIE + OLD_SPREAD

    preview = _cli(url, myapp, tmp_path, "purge-sessions", "--force", "--dry-run", "--batch-size", str(BATCH), "--json")
    assert preview.returncode == 0, preview.stderr
    assert json.loads(preview.stdout)["counts"] == {"deleted": old}
    assert _left(url) == (old + RECENT, old)

    run = _cli(url, myapp, tmp_path, "purge-sessions", "--force", "--batch-size", str(BATCH), "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert (report["status"], report["counts"]) == ("succeeded", {"deleted": old})
    assert 0 < report["largest_batch_items"] <= BATCH
    assert report["transactions"] >= old // BATCH
    assert _left(url) == (RECENT, 0)
