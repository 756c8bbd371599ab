"""Dead-man monitoring with the healthchecks.io ping protocol, per job (`ping_url` in its config table).

A run pings `<url>/start?rid=<uuid>` when it starts, then `<url>?rid=<uuid>`
on success or `<url>/fail?rid=<uuid>` otherwise (failed, timed out,
interrupted), with the same rid, so the monitor measures the run's duration
and alerts when pings stop coming. Skipped ticks and dry runs do not ping.
A monitor that is down or hangs costs the run at most `budget` seconds per
ping and never changes its outcome or exit code.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING

from ..errors import one_line
from ..outcome import RunStatus

if TYPE_CHECKING:
    from ..config import JobConfig
    from ..outcome import RunReport, Trigger

_BODY_LIMIT = 10_000


def ping_url(base: str, event: str, rid: str) -> str:
    """`event` ("start", "fail" or "") appended to the path, the rid added to any query the URL has."""
    from urllib.parse import urlencode, urlsplit, urlunsplit

    parts = urlsplit(base)
    path = parts.path.rstrip("/") + (f"/{event}" if event else "")
    query = "&".join(q for q in (parts.query, urlencode({"rid": rid})) if q)
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


class PingObserver:
    """Pings each job's monitor; one rid per run, kept from run_started to run_finished.

    timeout: seconds one attempt may take; attempts: at most this many tries
    (a refused connection, a timeout or a 5xx/429 answer is tried again);
    budget: seconds all attempts of one ping may take together;
    backoff: seconds before the second attempt, doubled for each one after.
    """

    timeout: float = 5.0
    attempts: int = 3
    budget: float = 10.0
    backoff: float = 0.5

    def __init__(self, *, timeout: float | None = None, attempts: int | None = None,
                 budget: float | None = None, backoff: float | None = None) -> None:
        if timeout is not None:
            self.timeout = timeout
        if attempts is not None:
            self.attempts = attempts
        if budget is not None:
            self.budget = budget
        if backoff is not None:
            self.backoff = backoff
        self._rids: dict[int, str] = {}

    def run_started(self, job: JobConfig, run_id: int, trigger: Trigger) -> None:
        if not job.ping_url:
            return
        rid = self._rids[run_id] = str(uuid.uuid4())
        self._send(job, run_id, ping_url(job.ping_url, "start", rid), b"")

    def run_finished(self, job: JobConfig, report: RunReport) -> None:
        if not job.ping_url or report.run_id is None:
            return
        rid = self._rids.pop(report.run_id, None) or str(uuid.uuid4())
        event = "" if report.status is RunStatus.SUCCEEDED else "fail"
        self._send(job, report.run_id, ping_url(job.ping_url, event, rid), _summary(report))

    def _send(self, job: JobConfig, run_id: int, url: str, body: bytes) -> bool:
        """POST with bounded retries; True once the monitor answered 2xx/3xx."""
        import http.client
        import urllib.error
        import urllib.request

        log = logging.LoggerAdapter(logging.getLogger("cronwarden.job"), {"job": job.name, "run_id": run_id})
        deadline = time.monotonic() + self.budget
        problem = "no attempt fitted in the time budget"
        for attempt in range(self.attempts):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            request = urllib.request.Request(url, data=body, method="POST",
                                             headers={"User-Agent": "cronwarden",
                                                      "Content-Type": "text/plain; charset=utf-8"})
            try:
                with urllib.request.urlopen(request, timeout=min(self.timeout, remaining)) as response:
                    response.read(1024)
                return True
            except urllib.error.HTTPError as exc:
                problem = f"HTTP {exc.code}"
                if exc.code < 500 and exc.code != 429:
                    break
            except (OSError, http.client.HTTPException, ValueError) as exc:
                problem = one_line(exc)
            pause = min(self.backoff * 2 ** attempt, deadline - time.monotonic())
            if attempt + 1 < self.attempts and pause > 0:
                time.sleep(pause)
        log.warning("dead-man ping (%s) not delivered: %s", _event_name(url, job.ping_url or ""), problem)
        return False


def _event_name(url: str, base: str) -> str:
    from urllib.parse import urlsplit

    tail = urlsplit(url).path[len(urlsplit(base).path.rstrip("/")):].strip("/")
    return tail or "success"


def _summary(report: RunReport) -> bytes:
    """The body healthchecks.io shows with the ping: outcome, duration, counts, error (secrets masked)."""
    from ..secrets import redact

    counts = " ".join(f"{k}={v}" for k, v in sorted(report.counts.items())) or "no items"
    duration = report.duration_seconds
    text = f"{report.job} run {report.run_id}: {report.status.value}"
    if duration is not None:
        text += f" in {duration:.3f}s"
    text += f" ({counts})"
    if report.error:
        text += f"\n{report.error}"
    return redact(text)[:_BODY_LIMIT].encode("utf-8")
