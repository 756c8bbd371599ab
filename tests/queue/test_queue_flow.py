"""Immediate, delayed and continuation jobs; persistent retries; enqueue in the caller's transaction."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import time_machine
from sqlalchemy import select

from jobs.queue import InvalidArguments, enqueue, queue_depth
from jobs.queue import models as qm
from jobs.queue.worker import work
from tests.queue.tasks import MODULE, NOOP, RECORD, TASKS, create_side_table, executions, executions_of

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
TEST_TASKS = {t.name: t for t in TASKS}


@pytest.fixture
def queue_engine(engine):
    qm.create(engine)
    create_side_table(engine)
    return engine


@pytest.fixture
def qcli(cli):
    """The CLI in-process with the queue commands and the test tasks."""
    def invoke(ws, *args: str):
        return cli(ws, *args, env={"CRONWARDEN_TASK_MODULES": MODULE})

    return invoke


def add(engine, task=RECORD, **kw) -> int:
    args = kw.pop("args", {})
    with engine.begin() as conn:
        return enqueue(conn, task, args=args, **kw)


def row(engine, job_id: int):
    with engine.connect() as conn:
        return conn.execute(select(qm.queued_jobs).where(qm.queued_jobs.c.id == job_id)).mappings().one()


def drain(engine):
    return work(engine, tasks=TEST_TASKS)


def order(engine) -> list[str]:
    with engine.connect() as conn:
        return [r.tag for r in conn.execute(select(executions.c.tag).order_by(executions.c.id))]


def test_immediate_delayed_and_continuation_jobs_run_in_order(queue_engine):
    with time_machine.travel(T0, tick=False):
        first = add(queue_engine, args={"tag": "first"})
        later = add(queue_engine, args={"tag": "later"}, delay=timedelta(minutes=10))
        then = add(queue_engine, args={"tag": "then"}, after=first)
        add(queue_engine, args={"tag": "last"}, after=then)
        assert row(queue_engine, later)["status"] == "scheduled"
        assert row(queue_engine, then)["status"] == "awaiting"
        drain(queue_engine)
    assert order(queue_engine) == ["first", "then", "last"]
    with time_machine.travel(T0 + timedelta(minutes=9, seconds=59), tick=False):
        assert drain(queue_engine).claimed == 0
    with time_machine.travel(T0 + timedelta(minutes=10, seconds=1), tick=False):
        assert drain(queue_engine).succeeded == 1
    assert order(queue_engine) == ["first", "then", "last", "later"]
    assert row(queue_engine, later)["status"] == "succeeded"


@pytest.mark.parametrize("db_url", ["postgres", "mariadb"], indirect=True)  # SQLite records with the next claim
def test_a_continuation_released_while_the_last_claim_ran_is_run_by_the_same_drain(queue_engine, monkeypatch):
    """The interleaving that once ended a drain early: the parent's outcome is still being written (on the
    recorder's thread) when the claim finds nothing, and the write ends before the worker looks whether one
    was in flight. Only the timing is forced (a write that starts late, a claim that returns late)."""
    import time

    from jobs.queue import claiming

    record, claim = claiming.record, claiming.claim

    def late_record(*args, **kwargs):
        time.sleep(0.3)  # the claim runs before this write commits
        return record(*args, **kwargs)

    def late_claim(*args, **kwargs):
        found = claim(*args, **kwargs)
        if not found:
            time.sleep(0.6)  # the write commits before the worker looks
        return found

    monkeypatch.setattr(claiming, "record", late_record)
    monkeypatch.setattr(claiming, "claim", late_claim)
    parent = add(queue_engine, args={"tag": "parent"})
    add(queue_engine, args={"tag": "child"}, after=parent)
    report = drain(queue_engine)
    assert order(queue_engine) == ["parent", "child"] and report.succeeded == 2


def test_continuations_of_a_parent_that_fails_for_good_are_cancelled_transitively(queue_engine):
    parent = add(queue_engine, args={"tag": "parent", "permanent": True})
    child = add(queue_engine, args={"tag": "child"}, after=parent)
    grandchild = add(queue_engine, args={"tag": "grandchild"}, after=child)
    report = drain(queue_engine)
    assert report.failed == 1
    assert row(queue_engine, parent)["status"] == "failed"
    assert [row(queue_engine, i)["status"] for i in (child, grandchild)] == ["cancelled", "cancelled"]
    assert order(queue_engine) == ["parent"]
    assert row(queue_engine, add(queue_engine, args={"tag": "late"}, after=parent))["status"] == "cancelled"


def test_cancelling_a_job_cancels_its_continuations(queue_engine):
    with time_machine.travel(T0, tick=False):
        parent = add(queue_engine, args={"tag": "p"}, delay=timedelta(hours=1))
        child = add(queue_engine, args={"tag": "c"}, after=parent)
    from jobs.queue import store

    assert store.cancel(queue_engine, parent) == 2
    assert row(queue_engine, child)["status"] == "cancelled"


def test_a_job_failing_twice_succeeds_on_its_third_attempt_after_60_then_300_seconds(queue_engine):
    with time_machine.travel(T0, tick=False):
        job = add(queue_engine, args={"tag": "flaky", "fail_times": 2})
        assert drain(queue_engine).retrying == 1
        assert row(queue_engine, job)["run_at"] == T0 + timedelta(seconds=60)
    with time_machine.travel(T0 + timedelta(seconds=59), tick=False):
        assert drain(queue_engine).claimed == 0
    with time_machine.travel(T0 + timedelta(seconds=60), tick=False):
        assert drain(queue_engine).retrying == 1
        assert row(queue_engine, job)["run_at"] == T0 + timedelta(seconds=360)
    with time_machine.travel(T0 + timedelta(seconds=359), tick=False):
        assert drain(queue_engine).claimed == 0
    with time_machine.travel(T0 + timedelta(seconds=360), tick=False):
        assert drain(queue_engine).succeeded == 1
    final = row(queue_engine, job)
    assert (final["status"], final["attempts"], final["last_error"]) == ("succeeded", 3, None)
    assert executions_of(queue_engine, "flaky") == 3


def test_a_job_failing_always_ends_failed_with_its_last_error_and_queue_retry_revives_it(qcli, workspace):
    from jobs.db import make_engine

    eng = make_engine(workspace.db_url)
    qm.create(eng)
    create_side_table(eng)
    with time_machine.travel(T0, tick=False):
        job_id = int(qcli(workspace, "enqueue", "test-record", "--arg", "tag=doomed", "--arg", "fail_times=4")
                     .stdout.strip())
    codes = []
    for minutes in (0, 2, 8, 24):
        with time_machine.travel(T0 + timedelta(minutes=minutes), tick=False):
            codes.append(qcli(workspace, "work").exit_code)
    assert codes == [0, 0, 0, 1]
    failed = json.loads(qcli(workspace, "queue", "show", str(job_id), "--json").stdout)
    assert (failed["status"], failed["attempts"]) == ("failed", 4)
    assert failed["last_error"] == "RuntimeError: doomed: planned failure 4"
    assert qcli(workspace, "queue", "retry", str(job_id)).exit_code == 0
    assert qcli(workspace, "work").exit_code == 0
    revived = json.loads(qcli(workspace, "queue", "show", str(job_id), "--json").stdout)
    assert (revived["status"], revived["attempts"]) == ("succeeded", 1)
    from jobs.tracking import history as runs_of

    history = runs_of(eng, "test-record", 10)
    assert [r["status"] for r in history] == ["succeeded", "failed", "failed", "failed", "failed"]
    assert {r["trigger"] for r in history} == {"queued"}
    eng.dispose()


def test_enqueue_in_a_transaction_that_rolls_back_leaves_no_job(queue_engine):
    with queue_engine.connect() as conn, conn.begin() as tx:
        enqueue(conn, RECORD, args={"tag": "ghost"})
        tx.rollback()
    from sqlalchemy.orm import Session

    with Session(queue_engine) as session:
        enqueue(session, RECORD, args={"tag": "ghost"})
        session.rollback()
    assert queue_depth(queue_engine)["counts"]["enqueued"] == 0


def test_enqueue_through_a_session_commits_with_the_session(queue_engine):
    from sqlalchemy.orm import Session

    with Session(queue_engine) as session:
        job = enqueue(session, RECORD, args={"tag": "kept"})
        session.commit()
    assert row(queue_engine, job)["status"] == "enqueued"


def test_the_same_idempotency_key_twice_gives_one_job(queue_engine):
    first = add(queue_engine, args={"tag": "once"}, key="order-42")
    second = add(queue_engine, args={"tag": "once"}, key="order-42")
    other = add(queue_engine, args={"tag": "other"})
    assert first == second != other
    drain(queue_engine)
    assert executions_of(queue_engine, "once") == 1


@pytest.mark.backend_neutral
def test_arguments_are_validated_at_enqueue(queue_engine):
    with pytest.raises(InvalidArguments, match="missing required argument 'tag'"):
        add(queue_engine, args={})
    with pytest.raises(InvalidArguments, match="fail_times: expected a number, got the string"):
        add(queue_engine, args={"tag": "x", "fail_times": "2"})
    with pytest.raises(InvalidArguments, match="unknown argument 'colour'"):
        add(queue_engine, args={"tag": "x", "colour": "red"})
    assert queue_depth(queue_engine)["counts"]["enqueued"] == 0


def test_queue_depth_counts_statuses_and_the_age_of_the_oldest_due_job(queue_engine):
    with time_machine.travel(T0, tick=False):
        add(queue_engine, NOOP)
        add(queue_engine, NOOP, delay=timedelta(hours=1))
    with time_machine.travel(T0 + timedelta(seconds=90), tick=False):
        depth = queue_depth(queue_engine)
    assert depth["counts"]["enqueued"] == 1 and depth["counts"]["scheduled"] == 1
    assert depth["oldest_due_seconds"] == 90.0


def test_a_worker_that_lost_its_claim_cannot_commit_over_the_worker_that_took_the_job_back(queue_engine):
    from jobs.queue import claiming
    from jobs.queue.worker import DEFAULT_CLAIM, Worker
    from jobs.signals import StopFlag

    with time_machine.travel(T0, tick=False):
        job = add(queue_engine, args={"tag": "contested"})
        slow = Worker(queue_engine, tasks=TEST_TASKS)
        claimed = claiming.claim(queue_engine, slow.token, 1, slow._ttls, DEFAULT_CLAIM)
    with time_machine.travel(T0 + RECORD.claim_ttl + timedelta(seconds=1), tick=False):
        report = drain(queue_engine)
        assert (report.reclaimed, report.succeeded) == (1, 1)
        late = slow._run_one(claimed[0], StopFlag())
        assert late.status == "failed" and "taken over" in late.error
        assert claiming.record(queue_engine, [late], "host", 1) == {job: None}
    assert executions_of(queue_engine, "contested") == 1
    assert (row(queue_engine, job)["status"], row(queue_engine, job)["attempts"]) == ("succeeded", 2)
