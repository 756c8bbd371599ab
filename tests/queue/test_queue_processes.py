"""Real `work` processes: exactly-once draining by four workers, SIGKILL reclaim, SIGTERM give-back."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from sqlalchemy import distinct, func, select

from jobs import clock
from jobs.queue import enqueue
from jobs.queue import models as qm
from jobs.queue.worker import work
from jobs.tracking import history
from tests.queue.tasks import HANG, MODULE, RECORD, TASKS, create_side_table, executions, executions_of

pytestmark = pytest.mark.slow
TEST_TASKS = {t.name: t for t in TASKS}


@pytest.fixture
def ws(workspace):
    return workspace


@pytest.fixture
def queue_engine(engine):
    qm.create(engine)
    create_side_table(engine)
    return engine


def start_worker(ws, *args: str) -> subprocess.Popen:
    env = ws.env(CRONWARDEN_TASK_MODULES=MODULE)
    return subprocess.Popen([sys.executable, "-m", "cli", "work", *args], cwd=ws.path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    for _ in range(600):
        if path.exists():
            return
        if proc.poll() is not None:
            raise AssertionError(f"worker exited {proc.returncode} early: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError("the task never started")


def row(engine, job_id: int):
    with engine.connect() as conn:
        return conn.execute(select(qm.queued_jobs).where(qm.queued_jobs.c.id == job_id)).mappings().one()


@pytest.mark.parametrize("jobs", [400, pytest.param(2000, marks=pytest.mark.reliability)])
def test_four_workers_drain_the_queue_running_each_job_exactly_once(ws, queue_engine, jobs):
    with queue_engine.begin() as conn:
        for i in range(jobs):
            enqueue(conn, RECORD, args={"tag": f"job-{i}"})
    workers = [start_worker(ws, "--json", "--max-seconds", "240") for _ in range(4)]
    outputs = [w.communicate(timeout=280) for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0, 0], [err for _, err in outputs]
    reports = [json.loads(out) for out, _ in outputs]
    assert sum(r["succeeded"] for r in reports) == jobs
    with queue_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(executions)).scalar() == jobs
        assert conn.execute(select(func.count(distinct(executions.c.tag)))).scalar() == jobs
    from jobs.queue import queue_depth

    assert queue_depth(queue_engine)["counts"]["succeeded"] == jobs


def test_a_job_whose_worker_was_killed_is_taken_back_after_its_claim_and_completes(ws, queue_engine, tmp_path):
    marker = tmp_path / "started"
    with queue_engine.begin() as conn:
        job = enqueue(conn, HANG, args={"tag": "killed", "marker": str(marker)})
    worker = start_worker(ws)
    wait_for(marker, worker)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    assert (row(queue_engine, job)["status"], row(queue_engine, job)["attempts"]) == ("running", 1)
    assert work(queue_engine, tasks=TEST_TASKS).claimed == 0
    with time_machine.travel(clock.utcnow() + HANG.claim_ttl + timedelta(seconds=1), tick=False):
        report = work(queue_engine, tasks=TEST_TASKS)
    assert (report.reclaimed, report.succeeded) == (1, 1)
    done = row(queue_engine, job)
    assert (done["status"], done["attempts"]) == ("succeeded", 2)
    assert executions_of(queue_engine, "killed") == 2
    assert [r["status"] for r in history(queue_engine, "test-hang", 10)] == ["succeeded", "abandoned"]


def test_sigterm_gives_the_job_back_without_consuming_an_attempt_and_exits_143(ws, queue_engine, tmp_path):
    marker = tmp_path / "started"
    with queue_engine.begin() as conn:
        job = enqueue(conn, HANG, args={"tag": "stopped", "marker": str(marker)})
    worker = start_worker(ws)
    wait_for(marker, worker)
    worker.send_signal(signal.SIGTERM)
    worker.communicate(timeout=30)
    assert worker.returncode == 143
    back = row(queue_engine, job)
    assert (back["status"], back["attempts"], back["claimed_by"]) == ("enqueued", 0, None)
    assert [r["status"] for r in history(queue_engine, "test-hang", 10)] == ["interrupted"]
    assert work(queue_engine, tasks=TEST_TASKS).succeeded == 1
    assert row(queue_engine, job)["attempts"] == 1
