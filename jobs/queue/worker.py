"""`cronwarden work`: take back abandoned claims, claim due rows in batches, run each, record each.

One invocation drains what is due (bounded by --max-jobs / --max-seconds) and
exits, so cron every minute is the whole deployment. Each task runs through a
JobContext like a recurring job: transactions with in-process retries, a
logger carrying the job name, counters, the timeout, and SIGTERM at batch
boundaries. Before each commit of a task's transaction the claim is checked
(and its row locked), so a worker that overran its claim cannot commit over
the worker that took the task back.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from .. import clock, execution, signals
from ..claims import GroupRecorder
from ..config import RetryPolicy
from ..errors import Interrupted, LeaseLost, UsageError, one_line
from . import args_from_json, claiming, task_specs
from .models import FAILED, SCHEDULED, SUCCEEDED

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from . import TaskSpec

T = TypeVar("T")
DEFAULT_BATCH = 200
FIRST_BATCH = 10
BATCH_SECONDS = 0.5
DEFAULT_CLAIM = timedelta(minutes=6)
FLUSH_AFTER = 0.5


@dataclass
class WorkReport:
    """What one `work` invocation did."""

    claimed: int = 0
    succeeded: int = 0
    retrying: int = 0
    failed: int = 0
    released: int = 0
    reclaimed: int = 0
    lost: int = 0
    signal: int | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"claimed": self.claimed, "succeeded": self.succeeded, "retrying": self.retrying,
                "failed": self.failed, "released": self.released, "reclaimed": self.reclaimed, "lost": self.lost,
                "interrupted": self.signal is not None, "errors": list(self.errors)}


class _Claim:
    """The `held` of a task's JobContext: before each commit, the row must still be ours."""

    def __init__(self, job: claiming.Claimed) -> None:
        self._job = job

    def verify(self, conn: Connection) -> None:
        if not claiming.verify_claim(conn, self._job.id, self._job.token):
            raise LeaseLost(f"queued job {self._job.id} was taken over by another worker (claim expired)")

    def check(self) -> None:
        """A claim is known lost only by reading its row, which verify does inside the batch."""

    def release(self) -> None:
        """A claim ends with its outcome's record (claiming.record), not with the run."""


class Worker:
    def __init__(self, engine: Engine, *, retry: RetryPolicy | None = None,
                 tasks: Mapping[str, TaskSpec] | None = None, batch_size: int = DEFAULT_BATCH) -> None:
        self.engine = engine
        self.retry = retry or RetryPolicy()
        self.tasks = dict(task_specs() if tasks is None else tasks)
        self.batch_size = batch_size
        self.host, self.pid = execution.owner()
        self.token = f"{execution.owner_id()}:{uuid.uuid4().hex[:8]}"
        self._ttls = {name: spec.claim_ttl for name, spec in self.tasks.items()}
        from ..context import JobContext

        self._context = JobContext
        self._parsed: dict[tuple[str, str], Any] = {}

    def _db(self, fn: Callable[[], T], what: str) -> T:
        return execution.retried(fn, what, self.retry)

    def recorder(self) -> GroupRecorder[claiming.Outcome, dict[int, str | None]]:
        """Outcomes recorded on a thread of their own on a database server, while the worker claims and runs
        more: the server's share of one batch's bookkeeping overlaps the next batch's tasks. One record at a
        time, in order. On SQLite, where writers take turns anyway, they go with the next claim instead."""
        return GroupRecorder(lambda outcomes: self._db(lambda: claiming.record(self.engine, outcomes, self.host,
                                                                            self.pid), "recording outcomes"),
                             background=self.engine.dialect.name != "sqlite", name="cronwarden-record")

    def work(self, *, max_jobs: int | None = None, max_seconds: float | None = None) -> WorkReport:
        """Drain due jobs until none is due, a limit is reached or a signal arrives.

        Batches adapt to the tasks: the first claims FIRST_BATCH rows, each next
        one as many as the last batch's pace runs in BATCH_SECONDS (at most
        batch_size), so fast tasks share a commit among hundreds while a worker
        never sits on a pile of slow ones that other workers could be running.
        """
        report = WorkReport()
        ends = time.monotonic() + max_seconds if max_seconds is not None else None
        self._recorder = recorder = self.recorder()
        with signals.graceful_stop() as stop:
            try:
                report.reclaimed = len(self._db(lambda: claiming.reclaim_expired(self.engine, self.host, self.pid),
                                                "taking back abandoned jobs"))
                pending: list[claiming.Outcome] = []
                size = min(self.batch_size, FIRST_BATCH)
                while True:
                    room = size if max_jobs is None else min(size, max_jobs - report.claimed)
                    if stop.requested or (ends is not None and time.monotonic() >= ends):
                        room = 0
                    if recorder.background:
                        self._flush(pending, report)
                        writing = recorder.in_flight  # read before the claim: a write that ends during it
                        batch = self._db(partial(claiming.claim, self.engine, self.token, max(room, 0), self._ttls,
                                                 DEFAULT_CLAIM), "claiming jobs")
                    else:
                        writing = False  # recorded in the claim's own transaction
                        statuses, batch = self._db(
                            partial(claiming.record_and_claim, self.engine, pending, self.host, self.pid, self.token,
                                    max(room, 0), self._ttls, DEFAULT_CLAIM),
                            "recording outcomes and claiming jobs")
                        self._report(pending, statuses, report)
                    if not batch:
                        if writing or recorder.in_flight:  # outcomes written meanwhile may have released
                            self._reported(recorder.wait(), report)  # continuations the claim did not see
                            continue                                  # yet: look again once it is written
                        break
                    report.claimed += len(batch)
                    started = time.monotonic()
                    pending = self._run_batch(batch, report, stop, ends)
                    per_job = (time.monotonic() - started) / len(batch)
                    size = max(1, min(self.batch_size, int(BATCH_SECONDS / max(per_job, 1e-6))))
            except Interrupted as exc:
                report.signal = exc.signum
            finally:
                self._reported(recorder.close(), report)
            if stop.requested and report.signal is None:
                report.signal = stop.signum
        return report

    def _run_batch(self, batch: list[claiming.Claimed], report: WorkReport, stop: signals.StopFlag,
                   ends: float | None) -> list[claiming.Outcome]:
        """Run a claimed batch; returns the outcomes not recorded yet (they go with the next claim).

        Outcomes are recorded together, at most FLUSH_AFTER seconds after the first of them.
        """
        ttl = max(self._ttls.get(job.job_name, DEFAULT_CLAIM) for job in batch)
        renewed = batch[0].claimed_at
        pending: list[claiming.Outcome] = []
        oldest = 0.0
        for i, job in enumerate(batch):
            if stop.requested or (ends is not None and time.monotonic() >= ends):
                self._flush(pending, report)
                report.released += self._release(batch[i:], report)
                return pending
            if pending and time.monotonic() - oldest >= FLUSH_AFTER:
                self._flush(pending, report)
            now = clock.utcnow()
            if now - renewed >= ttl / 2:
                self._flush(pending, report)
                still = self._db(partial(claiming.renew, self.engine, batch[i:], now + ttl), "renewing claims")
                renewed = now
                report.lost += len(batch[i:]) - len(still)
                batch[i:] = [j for j in batch[i:] if j.id in still]
                if job.id not in still:
                    continue
            job.started_at = now
            try:
                outcome = self._run_one(job, stop)
            except Interrupted as exc:
                self._flush(pending, report)
                self._release([job], report, record=True, error=one_line(exc))
                report.released += self._release(batch[i + 1:], report)
                raise
            if not pending:
                oldest = time.monotonic()
            pending.append(outcome)
        return pending

    def _flush(self, pending: list[claiming.Outcome], report: WorkReport) -> None:
        """Hand the outcomes (the list is emptied) to the recorder, once the ones before are recorded."""
        if not pending:
            return
        self._reported(self._recorder.wait(), report)
        self._recorder.put(pending)
        pending.clear()
        if not self._recorder.background:
            self._reported(self._recorder.wait(), report)

    def _reported(self, done: list[tuple[list[claiming.Outcome], dict[int, str | None]]], report: WorkReport) -> None:
        for outcomes, statuses in done:
            self._report(outcomes, statuses, report)

    def _report(self, pending: list[claiming.Outcome], statuses: dict[int, str | None], report: WorkReport) -> None:
        for o in pending:
            status = statuses.get(o.job.id)
            logger = _logger(o.job)
            if status == SUCCEEDED:
                report.succeeded += 1
                logger.info("queued job %d succeeded: %s", o.job.id,
                            " ".join(f"{k}={v}" for k, v in sorted(o.counts.items())) or "no items")
            elif status == SCHEDULED:
                report.retrying += 1
                logger.warning("queued job %d %s (attempt %d of %d), will retry: %s", o.job.id, o.status,
                               o.job.attempts, o.job.max_attempts, o.error)
            elif status == FAILED:
                report.failed += 1
                report.errors.append({"id": o.job.id, "job": o.job.job_name, "error": o.error})
                logger.error("queued job %d failed for good after %d attempts: %s", o.job.id, o.job.attempts,
                             o.error)
            else:
                report.lost += 1
                logger.error("queued job %d: its claim was lost (another worker took it back)", o.job.id)
        pending.clear()

    def _release(self, jobs: list[claiming.Claimed], report: WorkReport, *, record: bool = False,
                 error: str | None = None) -> int:
        n = self._db(lambda: claiming.release(self.engine, jobs, self.host, self.pid, record=record, error=error),
                     "giving jobs back")
        report.claimed -= n
        return n

    def _args(self, task: TaskSpec, text: str) -> Any:
        """Stored arguments, validated once per worker for each distinct text when they cannot change (frozen)."""
        key = (task.name, text)
        args = self._parsed.get(key)
        if args is None:
            args = args_from_json(task, text)
            params = getattr(type(args), "__dataclass_params__", None)
            if params is not None and params.frozen:
                if len(self._parsed) >= 1024:
                    self._parsed.clear()
                self._parsed[key] = args
        return args

    def _run_one(self, job: claiming.Claimed, stop: signals.StopFlag) -> claiming.Outcome:
        def ended(status: str, counts: dict[str, int], error: str | None = None, *,
                  permanent: bool = False) -> claiming.Outcome:
            return claiming.Outcome(job, status, dict(counts), clock.utcnow(), error, permanent)

        task = self.tasks.get(job.job_name)
        if task is None:
            return ended("failed", {}, f"unknown queue task {job.job_name!r} in this worker "
                                       f"(is CRONWARDEN_TASK_MODULES set?)")
        try:
            args = self._args(task, job.args)
        except UsageError as exc:
            return ended("failed", {}, f"stored arguments no longer valid: {exc}", permanent=True)
        logger = _logger(job)
        logger.info("queued job %d started (attempt %d of %d)", job.id, job.attempts, job.max_attempts)
        ctx = self._context(job=job.job_name, run_id=None, now=job.started_at, engine=self.engine, log=logger,
                         retry=self.retry, stop=stop, held=_Claim(job),
                         deadline=time.monotonic() + task.timeout.total_seconds())
        ending = execution.run_in(ctx, task.run, args, timeout=task.timeout)
        if ending.signal is not None:
            logger.warning("queued job %d interrupted: it goes back to the queue", job.id)
            raise Interrupted(ending.signal)
        return ended(ending.status.value, ctx.counts, ending.error, permanent=ending.permanent)


_LOGGERS: dict[str, Any] = {}


def _logger(job: claiming.Claimed):
    """One logger per task name (the same every time: its lines carry the name, no run id)."""
    logger = _LOGGERS.get(job.job_name)
    if logger is None:
        logger = _LOGGERS[job.job_name] = execution.job_logger(job.job_name, None)
    return logger


def work(engine: Engine, *, retry: RetryPolicy | None = None, max_jobs: int | None = None,
         max_seconds: float | None = None, batch_size: int = DEFAULT_BATCH,
         tasks: Mapping[str, TaskSpec] | None = None) -> WorkReport:
    """One worker invocation (what `cronwarden work` runs)."""
    return Worker(engine, retry=retry, tasks=tasks, batch_size=batch_size).work(max_jobs=max_jobs,
                                                                                 max_seconds=max_seconds)
