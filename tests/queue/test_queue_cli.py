"""The command line: enqueue, work and the operators' queue commands."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import time_machine

from tests.queue.tasks import MODULE

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def qcli(cli):
    def invoke(ws, *args: str):
        return cli(ws, *args, env={"CRONWARDEN_TASK_MODULES": MODULE})

    return invoke


def listed(qcli, ws, *args: str) -> dict[int, str]:
    return {j["id"]: j["status"] for j in json.loads(qcli(ws, "queue", "list", "--json", *args).stdout)["jobs"]}


def test_enqueue_prints_the_id_and_the_same_key_gives_the_same_job(qcli, workspace):
    first = qcli(workspace, "enqueue", "test-noop", "--key", "nightly-export")
    second = qcli(workspace, "enqueue", "test-noop", "--key", "nightly-export")
    assert first.exit_code == second.exit_code == 0
    assert first.stdout.strip() == second.stdout.strip() == "1"
    assert listed(qcli, workspace) == {1: "enqueued"}


def test_enqueue_json_says_whether_the_key_was_already_taken(qcli, workspace):
    first = json.loads(qcli(workspace, "enqueue", "test-noop", "--key", "k1", "--json").stdout)
    again = qcli(workspace, "enqueue", "test-noop", "--key", "k1", "--json")
    assert first == {"id": 1, "existing": False, "same_arguments": True}
    assert json.loads(again.stdout) == {"id": 1, "existing": True, "same_arguments": True}
    assert again.stderr == ""


def test_enqueue_with_a_taken_key_and_other_arguments_warns_and_keeps_the_first_job(qcli, workspace):
    qcli(workspace, "enqueue", "test-record", "--arg", "tag=first", "--key", "k1")
    second = qcli(workspace, "--quiet", "enqueue", "test-record", "--arg", "tag=second", "--key", "k1", "--json")
    assert second.exit_code == 0
    assert json.loads(second.stdout) == {"id": 1, "existing": True, "same_arguments": False}
    [warning] = second.stderr.splitlines()
    assert "WARNING" in warning and "'k1'" in warning and "job 1" in warning and "other arguments" in warning
    other_task = qcli(workspace, "enqueue", "test-noop", "--key", "k1")
    assert other_task.stdout.strip() == "1" and "other arguments" in other_task.stderr
    shown = json.loads(qcli(workspace, "queue", "show", "1", "--json").stdout)
    assert shown["job_name"] == "test-record" and shown["args"]["tag"] == "first"
    assert listed(qcli, workspace) == {1: "enqueued"}


@pytest.mark.backend_neutral
def test_enqueue_refuses_bad_arguments_with_exit_2(qcli, workspace):
    missing = qcli(workspace, "enqueue", "test-record")
    wrong = qcli(workspace, "enqueue", "test-record", "--arg", "tag=x", "--arg", "fail_times=many")
    unknown = qcli(workspace, "enqueue", "no-such-task")
    both = qcli(workspace, "enqueue", "test-noop", "--delay", "5m", "--at", "2030-01-01T00:00:00Z")
    assert [r.exit_code for r in (missing, wrong, unknown, both)] == [2, 2, 2, 2]
    assert "missing required argument 'tag'" in missing.stderr
    assert "fail_times: expected a whole number" in wrong.stderr
    assert "unknown queue task 'no-such-task'" in unknown.stderr
    assert listed(qcli, workspace) == {}


def test_delay_and_at_schedule_the_job_and_work_runs_it_when_due(qcli, workspace):
    with time_machine.travel(T0, tick=False):
        qcli(workspace, "enqueue", "test-noop", "--delay", "5m")
        qcli(workspace, "enqueue", "test-noop", "--at", (T0 + timedelta(hours=1)).isoformat())
        assert listed(qcli, workspace, "--status", "scheduled") == {1: "scheduled", 2: "scheduled"}
    with time_machine.travel(T0 + timedelta(minutes=5), tick=False):
        ran = json.loads(qcli(workspace, "work", "--json").stdout)
    assert (ran["claimed"], ran["succeeded"]) == (1, 1)
    assert listed(qcli, workspace) == {1: "succeeded", 2: "scheduled"}


def test_cancel_cancels_continuations_and_refuses_a_finished_job(qcli, workspace):
    qcli(workspace, "enqueue", "test-noop")
    qcli(workspace, "enqueue", "test-noop", "--after", "1")
    qcli(workspace, "enqueue", "test-noop")
    assert qcli(workspace, "work", "--max-jobs", "1").exit_code == 0
    qcli(workspace, "enqueue", "test-noop", "--after", "3")
    assert qcli(workspace, "queue", "cancel", "3").stdout.strip() == "cancelled 2 job(s)"
    refused = qcli(workspace, "queue", "cancel", "1")
    assert refused.exit_code == 2 and "succeeded" in refused.stderr
    assert listed(qcli, workspace) == {1: "succeeded", 2: "enqueued", 3: "cancelled", 4: "cancelled"}


def test_prune_deletes_only_finished_jobs_older_than_the_cutoff(qcli, workspace):
    with time_machine.travel(T0, tick=False):
        qcli(workspace, "enqueue", "test-noop")
        qcli(workspace, "work")
        qcli(workspace, "enqueue", "test-noop", "--delay", "90d")
    with time_machine.travel(T0 + timedelta(days=31), tick=False):
        assert qcli(workspace, "queue", "prune", "--older-than", "30d").stdout.strip() == "deleted 1 finished job(s)"
    assert listed(qcli, workspace) == {2: "scheduled"}


@pytest.mark.backend_neutral
def test_show_of_an_unknown_job_exits_2(qcli, workspace):
    result = qcli(workspace, "queue", "show", "42")
    assert result.exit_code == 2 and "no queued job 42" in result.stderr
