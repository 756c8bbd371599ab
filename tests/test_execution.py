"""What the runner and the queue worker share: one ending ladder, claim-ahead and group-commit recording."""

from __future__ import annotations

import threading
import tomllib
from datetime import datetime, timedelta, timezone

import pytest
import time_machine

from jobs import config as config_mod
from jobs.app import App
from jobs.claims import ClaimAhead, GroupRecorder
from jobs.errors import Interrupted, LeaseLost, PermanentError, TimedOut, TransientError
from jobs.execution import classify, owner_id
from jobs.outcome import RunStatus, Trigger
from jobs.spec import JobSpec
from jobs.tracking import history

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


class _LosingLock:
    """A lock that is taken away from its holder after the run's first batch committed."""

    def __init__(self) -> None:
        self.batches = 0

    def try_acquire(self, job: str, ttl: timedelta) -> _LosingLock:
        return self

    def verify(self, conn) -> None:
        self.batches += 1
        if self.batches > 1:
            raise LeaseLost("lost the lease on test-lost (taken by another host)")

    def check(self) -> None:
        pass

    def release(self) -> None:
        pass


def _two_batches(ctx, settings) -> None:
    ctx.in_transaction(lambda conn: None, tally=lambda _: {"done": 1})
    ctx.in_transaction(lambda conn: None, tally=lambda _: {"done": 1})


def test_a_lost_lock_is_recorded_failed_by_the_runner_and_a_lost_claim_by_the_worker_alike(sqlite_url, tmp_path):
    from jobs.db import make_engine
    from jobs.queue import claiming, enqueue
    from jobs.queue import models as qm
    from jobs.queue.worker import DEFAULT_CLAIM, Worker, work
    from jobs.runner import run_job
    from jobs.schema import upgrade
    from jobs.signals import StopFlag
    from tests.queue.tasks import RECORD, TASKS, create_side_table

    spec = JobSpec(name="test-lost", run=_two_batches, schedule="24h")
    cfg = config_mod.load(tomllib.loads(""), [spec], environ={"CRONWARDEN_LOCK_DIR": str(tmp_path / "locks")},
                          database_url=sqlite_url)
    engine = make_engine(sqlite_url)
    upgrade(engine)
    app = App(cfg)
    app._locks = _LosingLock()
    report = run_job(app, "test-lost", Trigger.MANUAL)
    assert report.status is RunStatus.FAILED and report.counts == {"done": 1}
    [ran] = history(app.engine, "test-lost", 10)
    assert (ran["status"], ran["error"]) == ("failed", "lost the lease on test-lost (taken by another host)")

    qm.create(engine)
    create_side_table(engine)
    tasks = {t.name: t for t in TASKS}
    with time_machine.travel(T0, tick=False):
        with engine.begin() as conn:
            job = enqueue(conn, RECORD, args={"tag": "contested"})
        slow = Worker(engine, tasks=tasks)
        claimed = claiming.claim(engine, slow.token, 1, slow._ttls, DEFAULT_CLAIM)
    with time_machine.travel(T0 + RECORD.claim_ttl + timedelta(seconds=1), tick=False):
        assert work(engine, tasks=tasks).succeeded == 1
        late = slow._run_one(claimed[0], StopFlag())
        assert claiming.record(engine, [late], "host", 1) == {job: None}
    rows = {r["status"]: r for r in history(engine, RECORD.name, 10)}
    assert sorted(rows) == ["abandoned", "failed", "succeeded"]  # the dead claim's, the late worker's, the taker's
    assert "taken over by another worker" in rows["failed"]["error"]
    engine.dispose()
    app.close()


@pytest.mark.parametrize(("exc", "status", "flags"), [
    (Interrupted(15), RunStatus.INTERRUPTED, {"signal": 15}),
    (TimedOut("late"), RunStatus.TIMED_OUT, {}),
    (LeaseLost("lost the lease on x"), RunStatus.FAILED, {"lost": True}),
    (TransientError("down"), RunStatus.FAILED, {"temporary": True}),
    (PermanentError("no"), RunStatus.FAILED, {"permanent": True}),
    (ValueError("bug"), RunStatus.FAILED, {}),
])
def test_every_way_a_run_ends_maps_to_one_status_and_its_flags(exc, status, flags):
    ending = classify(exc, timedelta(minutes=5))
    assert ending.status is status
    for flag in ("signal", "lost", "temporary", "permanent"):
        assert getattr(ending, flag) == flags.get(flag, None if flag == "signal" else False)
    if isinstance(exc, TimedOut):
        assert ending.error == "stopped at a batch boundary after its timeout (0:05:00)"


def test_owner_id_is_host_and_pid():
    import os
    import socket

    assert owner_id() == f"{socket.gethostname()}:{os.getpid()}"


def test_a_group_recorder_writes_in_order_in_groups_and_waits_for_outstanding_writes():
    written: list[list[int]] = []
    gate = threading.Event()

    def write(items: list[int]) -> int:
        gate.wait(10)
        written.append(items)
        return sum(items)

    recorder: GroupRecorder[int, int] = GroupRecorder(write, window=0.05)
    recorder.put([1])
    recorder.put([2, 3])
    assert recorder.in_flight
    gate.set()
    done = recorder.wait()
    assert not recorder.in_flight
    recorder.put([4])
    done += recorder.close()
    assert [i for group in written for i in group] == [1, 2, 3, 4]
    assert written[0] == [1, 2, 3]  # what came within the window went in one write
    assert done == [([1, 2, 3], 6), ([4], 4)]


def test_a_group_recorder_that_fails_stops_and_its_error_reaches_the_caller():
    def write(items: list[int]) -> None:
        raise RuntimeError("no table")

    recorder: GroupRecorder[int, None] = GroupRecorder(write)
    recorder.put([1])
    with pytest.raises(RuntimeError, match="no table"):
        recorder.wait()
    with pytest.raises(RuntimeError):
        recorder.check()
    recorder.put([2, 3])
    with pytest.raises(RuntimeError):
        recorder.close()
    assert recorder.unwritten == [1, 2, 3]


def test_a_group_recorder_in_the_foreground_writes_at_once_on_the_callers_thread():
    threads: list[str] = []
    recorder: GroupRecorder[int, int] = GroupRecorder(lambda items: threads.append(
        threading.current_thread().name) or len(items), background=False)
    recorder.put([1, 2])
    assert threads == [threading.current_thread().name] and recorder.wait() == [([1, 2], 2)]


def test_claims_are_taken_one_ahead_until_the_total_or_a_short_claim():
    asked: list[int] = []
    available = [7]

    def take(limit: int) -> list[int]:
        asked.append(limit)
        got = min(limit, available[0])
        available[0] -= got
        return list(range(got))

    claims = ClaimAhead(take, len, total=10, chunk=3)
    got = []
    while (claim := claims.next()) is not None:
        got.append(len(claim))
    assert claims.close() is None
    assert got == [3, 3, 1] and asked == [3, 3, 3]

    asked.clear()
    available[0] = 100
    claims = ClaimAhead(take, len, total=5, chunk=3)
    assert len(claims.next()) == 3
    assert claims.close() == [0, 1]  # taken ahead, never handed out: the caller gives it back
    assert asked == [3, 2]
