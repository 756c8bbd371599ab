"""Prometheus metrics: the exposition format, the values after real runs, the textfile and the Pushgateway."""

from __future__ import annotations

import base64
import math
import os
import stat
from datetime import datetime, timedelta, timezone

import time_machine
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

from jobs.app_tables import ref
from jobs.observe import metrics
from tests.conftest import refusing_table
from tests.test_pings import dead_url, http_recorder

T0 = datetime(2026, 3, 2, 3, 0, tzinfo=timezone.utc)
JOB = "refresh-token-cleanup"


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{metric name: {sorted label pairs: value}}, through the reference parser."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(parsed: dict, name: str, **labels: str) -> float:
    return parsed[name][tuple(sorted({"job_name": JOB, **labels}.items()))]


def _insert_expired_tokens(engine, n: int) -> None:
    tokens = ref("refresh_tokens", times=("expires_at", "created_at"), others=("user_id", "token_hash"))
    with engine.begin() as conn:
        conn.execute(insert(tokens), [{"user_id": 1, "token_hash": f"h{i}", "expires_at": T0 - timedelta(days=30),
                                       "created_at": T0 - timedelta(days=60)} for i in range(n)])


def test_render_escapes_label_values_and_help_for_the_reference_parser() -> None:
    family = metrics.Family("cronwarden_test", "gauge", 'help with \\ backslash\nand "quotes"')
    odd = 'a "quoted" \\ back\nslash'
    family.add(1.5, job_name=odd)
    family.add(math.inf, job_name="never")
    family.add(math.nan, job_name="unknown")
    [parsed] = list(text_string_to_metric_families(metrics.render([family])))
    assert parsed.documentation == 'help with \\ backslash\nand "quotes"'
    assert parsed.type == "gauge"
    values = {s.labels["job_name"]: s.value for s in parsed.samples}
    assert values[odd] == 1.5
    assert values["never"] == math.inf
    assert math.isnan(values["unknown"])


def test_metrics_report_a_succeeded_then_a_failed_run(workspace, engine, cli) -> None:
    _insert_expired_tokens(engine, 3)
    with time_machine.travel(T0, tick=False):
        assert cli(workspace, JOB, "--force").exit_code == 0
        ok = parse(cli(workspace, "metrics").stdout)
    assert value(ok, "cronwarden_job_up") == 1
    assert value(ok, "cronwarden_job_state", state="ok") == 1
    assert value(ok, "cronwarden_job_state", state="failing") == 0
    assert value(ok, "cronwarden_job_enabled") == 1
    assert value(ok, "cronwarden_job_paused") == 0
    assert value(ok, "cronwarden_job_overdue") == 0
    assert value(ok, "cronwarden_job_consecutive_failures") == 0
    assert value(ok, "cronwarden_job_last_run_timestamp_seconds") == T0.timestamp()
    assert value(ok, "cronwarden_job_last_success_timestamp_seconds") == T0.timestamp()
    assert value(ok, "cronwarden_job_last_duration_seconds") == 0
    assert value(ok, "cronwarden_job_next_due_timestamp_seconds") == (T0 + timedelta(hours=24)).timestamp()
    assert value(ok, "cronwarden_job_history_runs", status="succeeded") == 1
    assert value(ok, "cronwarden_job_history_runs", status="failed") == 0
    assert value(ok, "cronwarden_job_history_items") == 3
    assert ok["cronwarden_history_retention_seconds"][()] == 90 * 86400

    refusing_table(workspace.db_url)
    workspace.write_config(f'[jobs.{JOB}]\ntable = "nope"\n')
    t1 = T0 + timedelta(hours=1)
    with time_machine.travel(t1, tick=False):
        assert cli(workspace, JOB, "--force").exit_code == 1
        failed = parse(cli(workspace, "metrics").stdout)
    assert value(failed, "cronwarden_job_up") == 0
    assert value(failed, "cronwarden_job_state", state="failing") == 1
    assert value(failed, "cronwarden_job_consecutive_failures") == 1
    assert value(failed, "cronwarden_job_last_run_timestamp_seconds") == t1.timestamp()
    assert value(failed, "cronwarden_job_last_success_timestamp_seconds") == T0.timestamp()
    assert value(failed, "cronwarden_job_next_due_timestamp_seconds") == (t1 + timedelta(seconds=60)).timestamp()
    assert value(failed, "cronwarden_job_history_runs", status="succeeded") == 1
    assert value(failed, "cronwarden_job_history_runs", status="failed") == 1
    assert value(failed, "cronwarden_job_history_items") == 3


def test_metrics_of_a_job_that_never_ran(sqlite_workspace, cli) -> None:
    parsed = parse(cli(sqlite_workspace, "metrics").stdout)
    assert value(parsed, "cronwarden_job_state", state="pending") == 1
    assert value(parsed, "cronwarden_job_up") == 0
    assert value(parsed, "cronwarden_job_last_success_timestamp_seconds") == 0
    assert math.isnan(value(parsed, "cronwarden_job_last_duration_seconds"))
    assert value(parsed, "cronwarden_job_next_due_timestamp_seconds") == 0
    assert value(parsed, "cronwarden_job_history_runs", status="succeeded") == 0


def test_once_job_that_succeeded_is_never_due_again(sqlite_workspace, cli) -> None:
    sqlite_workspace.write_config(f'[jobs.{JOB}]\ninterval = "once"\n')
    assert cli(sqlite_workspace, JOB).exit_code == 0
    parsed = parse(cli(sqlite_workspace, "metrics").stdout)
    assert value(parsed, "cronwarden_job_next_due_timestamp_seconds") == math.inf


def test_paused_and_disabled_jobs_are_not_up(sqlite_workspace, cli) -> None:
    assert cli(sqlite_workspace, "pause", JOB).exit_code == 0
    paused = parse(cli(sqlite_workspace, "metrics").stdout)
    sqlite_workspace.write_config(f"[jobs.{JOB}]\nenabled = false\n")
    disabled = parse(cli(sqlite_workspace, "metrics").stdout)
    assert value(paused, "cronwarden_job_paused") == 1
    assert value(paused, "cronwarden_job_up") == 0
    assert value(disabled, "cronwarden_job_enabled") == 0
    assert value(disabled, "cronwarden_job_state", state="disabled") == 1


def test_metrics_file_is_replaced_atomically_after_a_run(sqlite_workspace, cli) -> None:
    target = sqlite_workspace.path / "textfile" / "cronwarden.prom"
    target.parent.mkdir()
    target.write_text("stale\n")
    before = target.stat().st_ino
    result = cli(sqlite_workspace, "--metrics-file", str(target), JOB, "--force")
    assert result.exit_code == 0, result.stderr
    assert target.stat().st_ino != before
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.listdir(target.parent) == ["cronwarden.prom"]
    assert value(parse(target.read_text()), "cronwarden_job_history_runs", status="succeeded") == 1


def test_metrics_file_that_cannot_be_written_is_a_warning(sqlite_workspace, cli) -> None:
    target = sqlite_workspace.path / "missing-dir" / "cronwarden.prom"
    result = cli(sqlite_workspace, "--metrics-file", str(target), JOB, "--force")
    assert result.exit_code == 0
    assert "writing the metrics file" in result.stderr


def test_metrics_command_writes_its_output_file(sqlite_workspace, cli) -> None:
    target = sqlite_workspace.path / "out.prom"
    result = cli(sqlite_workspace, "metrics", "--output", str(target))
    assert result.exit_code == 0
    assert result.stdout == ""
    assert value(parse(target.read_text()), "cronwarden_job_enabled") == 1


def test_skipped_tick_publishes_once_per_invocation(sqlite_workspace, cli, monkeypatch) -> None:
    from cli.state import State
    from jobs.outcome import RunReport, RunStatus
    from jobs.registry import all_specs

    monkeypatch.setenv("CRONWARDEN_DATABASE_URL", sqlite_workspace.db_url)
    target = sqlite_workspace.path / "m.prom"
    app = State(all_specs(with_plugins=False), False, str(sqlite_workspace.config_file),
                metrics_file=str(target)).app()
    [publisher] = [o for o in app.observers if isinstance(o, metrics.MetricsPublisher)]
    job = app.config.job(JOB)
    publisher.run_skipped(job, RunReport(JOB, RunStatus.NOT_DUE))
    first = target.stat().st_ino
    publisher.run_skipped(job, RunReport(JOB, RunStatus.NOT_DUE))
    app.close()
    assert target.stat().st_ino == first
    assert value(parse(target.read_text()), "cronwarden_job_state", state="pending") == 1


def test_pushgateway_receives_every_jobs_metrics(sqlite_workspace, cli) -> None:
    with http_recorder() as gateway:
        result = cli(sqlite_workspace, "--pushgateway", gateway.url, JOB, "--force")
    assert result.exit_code == 0, result.stderr
    [push] = gateway.requests
    assert (push.method, push.path) == ("PUT", "/metrics/job/cronwarden")
    assert push.headers["Content-Type"] == metrics.CONTENT_TYPE
    assert value(parse(push.body.decode()), "cronwarden_job_history_runs", status="succeeded") == 1


def test_pushgateway_url_with_grouping_key_and_credentials(sqlite_workspace, cli) -> None:
    with http_recorder() as gateway:
        url = f"http://pusher:pw-marker-77@127.0.0.1:{gateway.port}/metrics/job/myapp/env/prod"
        result = cli(sqlite_workspace, "--pushgateway", url, JOB, "--force")
    assert result.exit_code == 0, result.stderr
    [push] = gateway.requests
    assert push.path == "/metrics/job/myapp/env/prod"
    assert base64.b64decode(push.headers["Authorization"].split()[1]) == b"pusher:pw-marker-77"


def test_push_to_a_dead_port_keeps_the_exit_code(sqlite_workspace, cli) -> None:
    gateway = f"http://pusher:pw-marker-78@{dead_url().removeprefix('http://')}"
    ok = cli(sqlite_workspace, "--pushgateway", gateway, JOB, "--force")
    refusing_table(sqlite_workspace.db_url)
    sqlite_workspace.write_config(f'[jobs.{JOB}]\ntable = "nope"\n')
    failed = cli(sqlite_workspace, "--pushgateway", gateway, JOB, "--force")
    assert (ok.exit_code, failed.exit_code) == (0, 1)
    assert "pushing metrics to the Pushgateway failed" in ok.stderr
    assert "pw-marker-78" not in ok.stderr + failed.stderr


def test_pushgateway_that_is_not_http_is_a_configuration_error(sqlite_workspace, cli) -> None:
    result = cli(sqlite_workspace, "--pushgateway", "ftp://gateway:9091", JOB, "--force")
    assert result.exit_code == 78
    assert "--pushgateway" in result.stderr


def test_skipped_tick_refreshes_the_metrics_file(sqlite_workspace, cli) -> None:
    target = sqlite_workspace.path / "m.prom"
    sqlite_workspace.write_config(f'[jobs.{JOB}]\nhistory = "all"\n')
    assert cli(sqlite_workspace, JOB).exit_code == 0
    result = cli(sqlite_workspace, "--metrics-file", str(target), "run-due")
    assert result.exit_code == 0, result.stderr
    assert value(parse(target.read_text()), "cronwarden_job_history_runs", status="succeeded") == 1
