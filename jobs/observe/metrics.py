"""Prometheus metrics of every job, from the tracking tables, in the text exposition format.

Written by hand rather than with a client library: the tool stays light and
the format is small. Series are labelled `job_name`, not `job`: Prometheus
attaches its own `job` label to every scraped series (a node_exporter scrape
would rename ours to `exported_job`) and the Pushgateway reserves `job` for
its grouping key; kube-state-metrics uses `job_name` for the same reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..clock import is_never
from ..errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from ..app import App
    from ..config import Config, JobConfig
    from ..outcome import RunReport, Trigger

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PUSH_TIMEOUT = 5.0
PUSH_JOB = "cronwarden"
STORED_STATUSES = ("running", "succeeded", "failed", "timed_out", "interrupted", "abandoned", "duplicate_slot")
HEALTH_STATES = ("ok", "pending", "running", "stuck", "overdue", "failing", "paused", "disabled")
UP_STATES = frozenset({"ok", "running"})


@dataclass
class Family:
    """One metric: its HELP and TYPE lines and its samples (labels, value)."""

    name: str
    kind: str
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> None:
        self.samples.append((labels, value))


def build(config: Config, states: Mapping[str, Any], run_counts: Mapping[tuple[str, str], int],
          items: Mapping[str, int], now: datetime) -> list[Family]:
    """Every job's series; a job that never ran still has all of them (Prometheus: avoid missing series)."""
    from ..health import assess

    enabled = Family("cronwarden_job_enabled", "gauge", "1 if the job is enabled in the configuration.")
    paused = Family("cronwarden_job_paused", "gauge", "1 if the job is paused (cronwarden pause) on every host.")
    up = Family("cronwarden_job_up", "gauge",
                "1 if the job is healthy (state ok or running); 0 if failing, overdue, paused, disabled "
                "or never run.")
    state = Family("cronwarden_job_state", "gauge",
                   "The job's state as `cronwarden status` shows it: 1 for the current state, 0 for the others.")
    overdue = Family("cronwarden_job_overdue", "gauge", "1 if the job is past its next due time plus its grace.")
    failures = Family("cronwarden_job_consecutive_failures", "gauge",
                      "Failed runs in a row since the last success (0 after a success).")
    last_run = Family("cronwarden_job_last_run_timestamp_seconds", "gauge",
                      "Start of the latest run, whatever its outcome, in Unix time (0 if it never ran).")
    last_success = Family("cronwarden_job_last_success_timestamp_seconds", "gauge",
                          "End of the latest successful run, in Unix time (0 if it never succeeded).")
    duration = Family("cronwarden_job_last_duration_seconds", "gauge",
                      "Duration of the latest finished run (NaN if no run finished yet).")
    next_due = Family("cronwarden_job_next_due_timestamp_seconds", "gauge",
                      "When the job is next owed a run (schedule or retry backoff), in Unix time; "
                      "0 if due now, +Inf if never again.")
    missed = Family("cronwarden_job_missed_slots_total", "counter",
                    "Schedule slots skipped without a run (catch_up = \"none\": older than the job's catch_up_window "
                    "when a tick came); kept in the tracking table, so it survives restarts and history pruning.")
    runs = Family("cronwarden_job_history_runs", "gauge",
                  "Runs per outcome still in the history table (pruned after cronwarden_history_retention_seconds, "
                  "so a gauge, not a counter: use changes(cronwarden_job_last_run_timestamp_seconds[...]) for rates).")
    processed = Family("cronwarden_job_history_items", "gauge",
                       "Items processed (the sum of a run's counters) by the runs still in the history table.")
    retention = Family("cronwarden_history_retention_seconds", "gauge",
                       "The longest the history table keeps a run by default ([history] keep_succeeded and "
                       "keep_failed; a job's own history keys may differ).")
    for job in assess(config, states, now):
        name = job.name
        enabled.add(int(job.enabled), job_name=name)
        paused.add(int(job.paused), job_name=name)
        up.add(int(job.state in UP_STATES), job_name=name)
        for candidate in HEALTH_STATES:
            state.add(int(job.state == candidate), job_name=name, state=candidate)
        overdue.add(int(job.state == "overdue"), job_name=name)
        failures.add(job.consecutive_failures, job_name=name)
        last_run.add(_timestamp(job.last_executed_at, 0), job_name=name)
        last_success.add(_timestamp(job.last_success_at, 0), job_name=name)
        duration.add(math.nan if job.last_duration_seconds is None else job.last_duration_seconds, job_name=name)
        next_due.add(_timestamp(job.next_due_at, 0), job_name=name)
        missed.add(job.missed_slots, job_name=name)
        for status in STORED_STATUSES:
            runs.add(run_counts.get((name, status), 0), job_name=name, status=status)
        processed.add(items.get(name, 0), job_name=name)
    retention.add(config.history_retention.total_seconds())
    return [up, state, enabled, paused, overdue, failures, last_run, last_success, duration, next_due, missed,
            runs, processed, retention]


def _timestamp(value: datetime | None, missing: float) -> float:
    if value is None:
        return missing
    if is_never(value):
        return math.inf
    return value.timestamp()


def render(families: list[Family]) -> str:
    """The text exposition format (version 0.0.4), with HELP and label values escaped."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for labels, value in family.samples:
            lines.append(f"{family.name}{_labels(labels)} {_number(value)}")
    return "\n".join(lines) + "\n"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label(str(v))}"' for k, v in labels.items()) + "}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def history_items(engine: Engine) -> dict[str, int]:
    """Items per job over the runs the history still keeps (call after tracking created the tables)."""
    from sqlalchemy import func, select

    from ..models import runs

    query = select(runs.c.job_name, func.sum(runs.c["items"])).group_by(runs.c.job_name)
    with engine.connect() as conn:
        return {job: int(total or 0) for job, total in conn.execute(query).all()}


def exposition(app: App) -> str:
    """Read the tracking tables and render every job's metrics, then each extension's (queue, emails)."""
    from .. import clock, tracking
    from ..execution import db_call
    from ..registry import builtin_extensions

    now = clock.utcnow()
    states = db_call(app, lambda: tracking.all_states(app.engine, tracking.watched(app.config), now),
                     "reading the tracking table")
    counts = db_call(app, lambda: tracking.run_counts(app.engine), "reading the history")
    items = db_call(app, lambda: history_items(app.engine), "reading the history")
    families = build(app.config, states, counts, items, now)
    for extension in builtin_extensions():
        if extension.metrics is not None:
            families += extension.metrics(app, now)
    return render(families)


def write_file(path: Path, text: str) -> None:
    """Replace the file atomically, as node_exporter's textfile collector needs (it may read at any moment)."""
    from ..files import atomic_write

    atomic_write(path, text, mode=0o644)


def check_pushgateway(url: str) -> None:
    """An http(s) URL with a host; its password, if any, is masked from then on."""
    from urllib.parse import urlsplit

    from ..secrets import remember

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise ConfigError("--pushgateway: expected an http:// or https:// URL such as http://pushgateway:9091")
    remember(parts.password)


def push_target(url: str) -> tuple[str, tuple[str, str] | None]:
    """Where to PUT, and basic-auth credentials taken out of the URL.

    A bare gateway URL gets the grouping key /metrics/job/cronwarden; a URL that
    already names one (…/metrics/job/<name>/<label>/<value>) is used as given.
    """
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(url)
    auth = (unquote(parts.username or ""), unquote(parts.password or "")) if parts.username else None
    netloc = parts.hostname if ":" not in (parts.hostname or "") else f"[{parts.hostname}]"
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    path = parts.path
    if "/metrics/job/" not in path:
        path = path.rstrip("/") + f"/metrics/job/{PUSH_JOB}"
    return urlunsplit((parts.scheme, netloc, path, parts.query, "")), auth


def push(url: str, text: str, timeout: float = PUSH_TIMEOUT) -> None:
    """PUT the exposition to a Pushgateway: it replaces the group, so jobs removed from the config disappear."""
    import base64
    import urllib.request

    target, auth = push_target(url)
    request = urllib.request.Request(target, data=text.encode("utf-8"), method="PUT",
                                     headers={"Content-Type": CONTENT_TYPE, "User-Agent": "cronwarden"})
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()


class MetricsPublisher:
    """Publishes every job's metrics after a run: to a textfile for node_exporter and/or a Pushgateway.

    Every job's series, not only the one that ran, all read from the shared
    tables: a job that stopped running cannot report that it is overdue, so
    whichever job runs next (on any host) reports it. A failure to publish is
    a warning; it never fails the job or changes its exit code.
    """

    def __init__(self, app: App, *, file: Path | None = None, pushgateway: str | None = None,
                 timeout: float = PUSH_TIMEOUT) -> None:
        if pushgateway is not None:
            check_pushgateway(pushgateway)
        self._app = app
        self.file = file
        self.pushgateway = pushgateway
        self.timeout = timeout
        self._published = False
        self._silent = False  # a Pushgateway that timed out once costs one timeout per invocation, not one per run

    def run_started(self, job: JobConfig, run_id: int, trigger: Trigger) -> None:
        """Nothing to publish before the outcome is recorded."""

    def run_finished(self, job: JobConfig, report: RunReport) -> None:
        self.publish(job.name, report.run_id)

    def run_skipped(self, job: JobConfig, report: RunReport) -> None:
        """A skipped tick changes no row, so once per invocation is enough to keep the file fresh."""
        if not self._published:
            self.publish(job.name, None)

    def publish(self, job: str, run_id: int | None) -> None:
        from ..errors import one_line
        from ..execution import job_logger

        log = job_logger(job, run_id)
        try:
            text = exposition(self._app)
        except Exception as exc:  # noqa: BLE001 - metrics never fail the job
            log.warning("metrics not published: %s", one_line(exc))
            return
        self._published = True
        if self.file is not None:
            try:
                write_file(self.file, text)
            except OSError as exc:
                log.warning("writing the metrics file %s failed: %s", self.file, one_line(exc))
        if self.pushgateway is not None and not self._silent:
            try:
                push(self.pushgateway, text, self.timeout)
            except Exception as exc:  # noqa: BLE001 - an unreachable Pushgateway never fails the job
                self._silent = isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError)
                log.warning("pushing metrics to the Pushgateway failed: %s%s", one_line(exc),
                            " (it did not answer: not tried again in this invocation)" if self._silent else "")
