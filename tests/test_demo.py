"""`cronwarden demo` on a fresh machine: no config, no servers, an empty directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO


def test_demo_in_an_empty_directory_runs_every_job_and_shows_counts(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONWARDEN_")}
    env.update(PYTHONPATH=str(REPO), NO_COLOR="1")
    result = subprocess.run([sys.executable, "-m", "cli", "demo"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = subprocess.run([sys.executable, "-m", "cli", "list", "--json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    names = [j["job"] for j in json.loads(jobs.stdout)["jobs"]]
    assert "refresh-token-cleanup" in names
    for name in names:
        line = next(line for line in result.stdout.splitlines() if line.startswith(f"{name}: "))
        assert "succeeded (" in line and "=" in line, line
    assert "refresh-token-cleanup: succeeded (deleted=185)" in result.stdout
    assert (tmp_path / "cronwarden.db").exists()
    assert "STATE" in result.stdout and "ok" in result.stdout
    again = subprocess.run([sys.executable, "-m", "cli", "demo"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "sample data" not in again.stdout
