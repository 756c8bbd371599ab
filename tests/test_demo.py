"""`cronwarden demo` on a fresh machine: no config, no servers, an empty directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import version

import pytest

from tests.conftest import REPO

CONFIG = "cronwarden-demo/cronwarden.toml"


def _run(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONWARDEN_")}
    env.update(PYTHONPATH=str(REPO), NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_demo_in_an_empty_directory_runs_every_job_and_shows_counts(tmp_path):
    result = _run(tmp_path, "demo")
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = _run(tmp_path, "--config", CONFIG, "list", "--json")
    names = [j["job"] for j in json.loads(jobs.stdout)["jobs"]]
    assert "refresh-token-cleanup" in names
    for name in names:
        line = next(line for line in result.stdout.splitlines() if line.startswith(f"{name}: "))
        assert "succeeded (" in line and "=" in line, line
    assert "refresh-token-cleanup: succeeded (deleted=185)" in result.stdout
    assert "STATE" in result.stdout and "ok" in result.stdout


def test_demo_keeps_every_file_in_one_folder_that_git_ignores(tmp_path):
    assert _run(tmp_path, "demo").returncode == 0
    assert [p.name for p in tmp_path.iterdir()] == ["cronwarden-demo"]
    folder = tmp_path / "cronwarden-demo"
    assert {"cronwarden.db", "cronwarden.toml", "outbox", "locks", "logs"} <= {p.name for p in folder.iterdir()}
    assert len(list((folder / "outbox").glob("*.eml"))) == 5
    shutil.copy(REPO / ".gitignore", tmp_path / ".gitignore")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    untracked = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=tmp_path,
                               capture_output=True, text=True, check=True).stdout.split()
    assert untracked == ["??", ".gitignore"]


def test_demo_says_where_the_emails_went(tmp_path):
    result = _run(tmp_path, "demo")
    assert "emails: written as .eml files to cronwarden-demo/outbox/" in result.stdout


@pytest.mark.slow
def test_a_second_demo_says_its_sample_data_already_existed(tmp_path):
    assert "sample data in cronwarden-demo/cronwarden.db: 20 users" in _run(tmp_path, "demo").stdout
    again = _run(tmp_path, "demo")
    assert again.returncode == 0
    assert "sample data: already in cronwarden-demo/cronwarden.db, kept" in again.stdout


def test_the_readme_quick_start_reaches_the_demo_database(tmp_path):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    quick = next(line for line in readme.splitlines() if "cronwarden demo &&" in line)
    second = quick.split("cronwarden demo && ")[1].split("cronwarden ", 1)[1].split()
    assert _run(tmp_path, "demo").returncode == 0
    result = _run(tmp_path, *second, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "succeeded"
    history = json.loads(_run(tmp_path, "--config", CONFIG, "history", "--json").stdout)["runs"]
    assert [r["trigger"] for r in history if r["job_name"] == "refresh-token-cleanup"] == ["forced", "manual"]
    assert tomllib.loads((tmp_path / CONFIG).read_text())["database_url"].endswith("cronwarden-demo/cronwarden.db")


def test_version_prints_the_installed_package_version(tmp_path):
    result = _run(tmp_path, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"cronwarden {version('cronwarden')}"
