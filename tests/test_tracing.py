"""OpenTelemetry: a span per run and per batch, and nothing imported unless OTEL_* asks for it."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tomllib

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from jobs import config as config_mod
from jobs.app import App
from jobs.observe.tracing import TracingObserver, configured
from jobs.outcome import RunStatus, Trigger
from jobs.registry import builtin_specs
from jobs.runner import run_job
from tests.conftest import refusing_table
from tests.test_pings import http_recorder

JOB = "refresh-token-cleanup"
PROBE = """
import json, sys
from cli.app import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "otel": any(m == "opentelemetry" or m.startswith("opentelemetry.")
                                            for m in sys.modules)}))
"""


def _app(ws, observer, toml: str = "") -> App:
    config = config_mod.load(tomllib.loads(toml), builtin_specs(), environ=ws.env(), database_url=ws.db_url)
    app = App(config)
    app.observers.append(observer)
    return app


def _probe(ws, *args: str, **env: str) -> dict:
    """The real CLI in a fresh interpreter: its exit code and whether any opentelemetry module got imported."""
    clean = {k: v for k, v in ws.env(**env).items() if not k.startswith("OTEL_") or k in env}
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ws.path, env=clean, capture_output=True,
                          text=True, timeout=60)
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "stderr": done.stderr}


@pytest.mark.parametrize(("env", "expected"), [
    ({}, False),
    ({"OTEL_SERVICE_NAME": "billing"}, False),
    ({"OTEL_TRACES_EXPORTER": "none"}, False),
    ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
])
def test_tracing_is_configured_only_by_an_exporter_or_endpoint(env: dict, expected: bool) -> None:
    assert configured(env) is expected


def test_run_is_a_span_with_a_child_span_per_batch(sqlite_workspace) -> None:
    exporter = InMemorySpanExporter()
    app = _app(sqlite_workspace, TracingObserver({}, exporter=exporter))
    report = run_job(app, JOB, Trigger.FORCED)
    app.close()
    assert report.status is RunStatus.SUCCEEDED
    spans = exporter.get_finished_spans()
    [run] = [s for s in spans if s.name == f"run {JOB}"]
    batches = [s for s in spans if s.name == f"batch {JOB}"]
    assert dict(run.attributes) == {
        "cronwarden.job": JOB, "cronwarden.run_id": report.run_id, "cronwarden.trigger": "forced",
        "cronwarden.status": "succeeded", "cronwarden.items": 0, "cronwarden.count.deleted": 0,
        "cronwarden.transactions": report.transactions,
    }
    assert run.status.status_code is StatusCode.OK
    assert run.resource.attributes["service.name"] == "cronwarden"
    assert len(batches) == report.transactions >= 1
    assert {b.parent.span_id for b in batches} == {run.context.span_id}
    assert {b.context.trace_id for b in batches} == {run.context.trace_id}
    assert [b.attributes["cronwarden.batch"] for b in batches] == list(range(1, len(batches) + 1))


def test_failed_run_span_carries_the_error(sqlite_workspace) -> None:
    exporter = InMemorySpanExporter()
    refusing_table(sqlite_workspace.db_url)
    app = _app(sqlite_workspace, TracingObserver({}, exporter=exporter), f'[jobs.{JOB}]\ntable = "nope"\n')
    report = run_job(app, JOB, Trigger.FORCED)
    app.close()
    assert report.status is RunStatus.FAILED
    spans = {s.name: s for s in exporter.get_finished_spans()}
    run, batch = spans[f"run {JOB}"], spans[f"batch {JOB}"]
    assert run.status.status_code is StatusCode.ERROR
    assert run.attributes["cronwarden.status"] == "failed"
    assert run.attributes["error.type"] == "failed"
    assert "nope" in run.attributes["cronwarden.error"]
    assert batch.status.status_code is StatusCode.ERROR
    assert "nope" in batch.status.description


def test_missing_extra_turns_tracing_off_with_one_warning(sqlite_workspace, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.resources", None)
    warnings: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = warnings.append  # type: ignore[method-assign]
    logger = logging.getLogger("cronwarden.tracing")
    logger.addHandler(handler)
    app = _app(sqlite_workspace, TracingObserver({"OTEL_TRACES_EXPORTER": "console"}))
    try:
        first = run_job(app, JOB, Trigger.FORCED)
        second = run_job(app, JOB, Trigger.FORCED)
    finally:
        logger.removeHandler(handler)
        app.close()
    assert (first.status, second.status) == (RunStatus.SUCCEEDED, RunStatus.SUCCEEDED)
    assert len(warnings) == 1
    assert "install cronwarden[otel]" in warnings[0].getMessage()


def test_normal_tick_never_imports_opentelemetry(sqlite_workspace) -> None:
    forced = _probe(sqlite_workspace, JOB, "--force")
    tick = _probe(sqlite_workspace, JOB, OTEL_TRACES_EXPORTER="console")
    assert (forced["code"], forced["otel"]) == (0, False)
    assert (tick["code"], tick["otel"]) == (0, False)


def test_configured_cli_run_exports_spans_to_the_console(sqlite_workspace) -> None:
    result = _probe(sqlite_workspace, JOB, "--force", OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="billing")
    assert (result["code"], result["otel"]) == (0, True)
    assert f'"name": "run {JOB}"' in result["stderr"]
    assert '"service.name": "billing"' in result["stderr"]


def test_otlp_exporter_posts_the_spans_to_the_collector(sqlite_workspace) -> None:
    with http_recorder() as collector:
        result = _probe(sqlite_workspace, JOB, "--force", OTEL_EXPORTER_OTLP_ENDPOINT=collector.url)
    assert result["code"] == 0, result["stderr"]
    assert [(r.method, r.path) for r in collector.requests] == [("POST", "/v1/traces")]
    assert JOB.encode() in collector.requests[0].body
