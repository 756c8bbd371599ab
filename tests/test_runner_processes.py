"""The pipeline with real processes: concurrency, SIGKILL between batches, SIGTERM, errors, secrets."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest

from jobs.clock import utcnow
from tests.app_data import add_tokens, count_tokens

pytestmark = pytest.mark.slow


def _history(ws) -> list[dict]:
    return json.loads(ws.run("history", "--json").stdout)["runs"]


def test_sixteen_concurrent_ticks_make_exactly_one_run_and_no_loser_waits(workspace, engine):
    # The winner's run (2,000 transactions) lasts far longer than a loser needs to find the lock taken
    # and exit, so a loser that ends after the winner can only have waited for it.
    add_tokens(engine, utcnow(), expired=4000, fresh=100)
    workspace.write_config('[jobs.refresh-token-cleanup]\nbatch_size = 2\n')
    env = workspace.env()

    def tick() -> tuple[int, dict, float]:
        proc = subprocess.run([sys.executable, "-m", "cli", "refresh-token-cleanup", "--json"],
                              cwd=workspace.path, env=env, capture_output=True, text=True, timeout=300)
        return proc.returncode, json.loads(proc.stdout), time.time()

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: tick(), range(16)))
    assert [code for code, _, _ in results] == [0] * 16
    statuses = [report["status"] for _, report, _ in results]
    assert statuses.count("succeeded") == 1, statuses
    assert set(statuses) <= {"succeeded", "locked", "not_due"}
    runs = _history(workspace)
    assert len(runs) == 1 and runs[0]["status"] == "succeeded"
    winner_end = datetime.fromisoformat(runs[0]["finished_at"]).replace(tzinfo=timezone.utc).timestamp()
    losers_end = [ended for _, report, ended in results if report["status"] == "locked"]
    assert all(ended < winner_end for ended in losers_end), "a loser waited for the winner"
    assert count_tokens(engine, "old") == 0 and count_tokens(engine, "new") == 100


def _start_slow_cleanup(workspace, engine):
    add_tokens(engine, utcnow(), expired=4000, fresh=300)
    workspace.write_config('[jobs.refresh-token-cleanup]\nbatch_size = 1\n')
    proc = workspace.popen("refresh-token-cleanup", "--force")
    deadline = time.monotonic() + 60
    while count_tokens(engine, "old") > 3900:
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    return proc


def test_sigkill_between_batches_leaves_whole_batches_and_the_next_run_finishes(workspace, engine):
    proc = _start_slow_cleanup(workspace, engine)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    left = count_tokens(engine, "old")
    assert 0 < left < 4000, "killed mid-run"
    assert count_tokens(engine, "new") == 300
    workspace.write_config('[jobs.refresh-token-cleanup]\nbatch_size = 1000\n')  # the rest, in a few batches
    result = workspace.run("refresh-token-cleanup", "--force", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["counts"]["deleted"] == left
    assert count_tokens(engine, "old") == 0 and count_tokens(engine, "new") == 300
    assert [r["status"] for r in _history(workspace)] == ["succeeded", "abandoned"]


def test_sigterm_mid_run_rolls_back_the_batch_records_interrupted_and_exits_143(workspace, engine):
    proc = _start_slow_cleanup(workspace, engine)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert count_tokens(engine, "new") == 300
    runs = _history(workspace)
    assert runs[0]["status"] == "interrupted" and "SIGTERM" in runs[0]["error"]
    assert runs[0]["counts"]["deleted"] == 4000 - count_tokens(engine, "old")
    workspace.write_config('[jobs.refresh-token-cleanup]\nbatch_size = 1000\n')  # the rest, in a few batches
    again = workspace.run("refresh-token-cleanup", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "succeeded", "lock released, still due"


def test_sigint_exits_130(workspace, engine):
    proc = _start_slow_cleanup(workspace, engine)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert _history(workspace)[0]["status"] == "interrupted"
