"""Observers that show runs to operators: Prometheus metrics, dead-man pings, OpenTelemetry traces.

attach() runs on every invocation, so it imports nothing heavy: each observer
imports its HTTP client or SDK only when a run actually happens.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on a tick (see jobs/__init__.py)
if TYPE_CHECKING:
    from ..app import App


def configured(environ: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces (checked without importing anything: the quick path asks
    before deciding a tick, so this lives here and not in .tracing, which imports logging and threading)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if exporters:
        return any(name.strip().lower() not in ("", "none") for name in exporters.split(","))
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def attach(app: App, *, metrics_file: str | None = None, pushgateway: str | None = None,
           environ: Mapping[str, str] | None = None) -> None:
    """Add the observers this invocation asked for (ping URLs, OTEL_* environment, metrics options).

    In this order, which is the order they hear of a run: the dead-man monitor
    first, so its start and finish pings bracket the run as closely as possible;
    metrics last, since they read the outcome back from the tables.
    """
    env = os.environ if environ is None else environ
    if any(job.ping_url for job in app.config.jobs.values()):
        from .pings import PingObserver

        app.observers.append(PingObserver())
    if configured(env):
        from .tracing import TracingObserver

        app.observers.append(TracingObserver(env))
    if metrics_file or pushgateway:
        from .metrics import MetricsPublisher

        app.observers.append(MetricsPublisher(app, file=Path(metrics_file) if metrics_file else None,
                                              pushgateway=pushgateway))
