"""OpenTelemetry traces: one span per run, a child span per batch (transaction).

On only when the `otel` extra is installed and the OTEL_* environment names
an exporter (OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT; OTEL_SDK_DISABLED=true turns it off).
The SDK is imported at the first run, never on a tick that runs nothing, and
spans are flushed when each run ends: a cron process does not live long
enough for the batch processor's timer. The flush waits at most
FLUSH_TIMEOUT seconds (the SDK's own flush waits out every export retry), so
a collector that is down or silent delays the exit by that much once per
invocation, with one warning, and changes nothing else.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import one_line
from ..outcome import RunStatus
from . import configured  # noqa: F401 - where it was first defined; the quick path imports it from the package

if TYPE_CHECKING:
    from ..config import JobConfig
    from ..outcome import RunReport, Trigger

FLUSH_TIMEOUT = 3.0
SERVICE_NAME = "cronwarden"
log = logging.getLogger("cronwarden.tracing")


def exporters_from(environ: Mapping[str, str]) -> list[Any]:
    """The span exporters OTEL_TRACES_EXPORTER names (otlp by default, console, none)."""
    found = []
    for name in (environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(","):
        name = name.strip().lower()
        if name in ("", "none"):
            continue
        if name == "console":
            import sys

            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            found.append(ConsoleSpanExporter(out=sys.stderr))
        elif name == "otlp":
            protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip().lower()
            if protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            else:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            found.append(OTLPSpanExporter())
        else:
            raise ValueError(f"OTEL_TRACES_EXPORTER: {name!r} is not supported (otlp, console or none)")
    return found


@dataclass
class _Run:
    span: Any
    batches: int = 0


class TracingObserver:
    """Turns runs into spans. `exporter` replaces the environment's exporters (tests pass an in-memory one)."""

    def __init__(self, environ: Mapping[str, str], *, exporter: Any = None) -> None:
        self._environ = environ
        self._exporter = exporter
        self._provider: Any = None
        self._tracer: Any = None
        self._failed = False
        self._stalled = False
        self._runs: dict[int, _Run] = {}

    def _ready(self) -> bool:
        """Build the provider at the first run; a missing extra or a bad setting turns tracing off with one warning."""
        if self._tracer is not None or self._failed:
            return self._tracer is not None
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            resource = Resource.create()
            if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
                resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
            provider = TracerProvider(resource=resource, shutdown_on_exit=False)
            for exporter in [self._exporter] if self._exporter is not None else exporters_from(self._environ):
                provider.add_span_processor(BatchSpanProcessor(exporter))
        except ImportError as exc:
            self._failed = True
            log.warning("OTEL_* is set but tracing is off: install cronwarden[otel] (%s)", one_line(exc))
            return False
        except ValueError as exc:
            self._failed = True
            log.warning("tracing is off: %s", one_line(exc))
            return False
        self._provider = provider
        self._tracer = provider.get_tracer("cronwarden")
        _route_sdk_logs()
        return True

    def run_started(self, job: JobConfig, run_id: int, trigger: Trigger) -> None:
        if not self._ready():
            return
        span = self._tracer.start_span(f"run {job.name}", attributes={
            "cronwarden.job": job.name, "cronwarden.run_id": run_id, "cronwarden.trigger": trigger.value})
        self._runs[run_id] = _Run(span)

    @contextmanager
    def batch(self, job: str, run_id: int | None) -> Iterator[None]:
        run = self._runs.get(run_id) if run_id is not None else None
        if run is None:
            yield
            return
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        run.batches += 1
        with self._tracer.start_as_current_span(
            f"batch {job}", context=trace.set_span_in_context(run.span),
            attributes={"cronwarden.job": job, "cronwarden.run_id": run_id, "cronwarden.batch": run.batches},
            record_exception=False, set_status_on_exception=False,
        ) as span:
            try:
                yield
            except BaseException as exc:
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(Status(StatusCode.ERROR, one_line(exc)))
                raise

    def run_finished(self, job: JobConfig, report: RunReport) -> None:
        run = self._runs.pop(report.run_id, None) if report.run_id is not None else None
        if run is None:
            return
        from opentelemetry.trace import Status, StatusCode

        from ..secrets import redact

        span = run.span
        span.set_attribute("cronwarden.status", report.status.value)
        span.set_attribute("cronwarden.items", sum(report.counts.values()))
        span.set_attribute("cronwarden.transactions", report.transactions)
        for name, value in report.counts.items():
            span.set_attribute(f"cronwarden.count.{name}", value)
        if report.status is RunStatus.SUCCEEDED:
            span.set_status(Status(StatusCode.OK))
        else:
            error = redact(report.error or report.status.value)
            span.set_attribute("error.type", report.status.value)
            span.set_attribute("cronwarden.error", error)
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()
        if self._stalled:
            return
        flusher = threading.Thread(target=self._provider.force_flush, name="cronwarden-otel-flush", daemon=True)
        flusher.start()
        flusher.join(FLUSH_TIMEOUT)
        if flusher.is_alive():
            self._stalled = True
            log.warning("traces not exported within %gs: the collector did not answer (later runs of this "
                        "invocation do not wait for it)", FLUSH_TIMEOUT)


def _route_sdk_logs() -> None:
    """The SDK's own warnings (an unreachable collector) go through our handlers: same format, secrets masked."""
    ours = logging.getLogger("cronwarden").handlers
    if ours:
        sdk = logging.getLogger("opentelemetry")
        sdk.handlers = list(ours)
        sdk.propagate = False
