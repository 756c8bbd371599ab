"""The alerting rules and the dashboard that ship in deploy/: valid for Prometheus and Grafana, unit-tested
with promtool, and firing on what the real `cronwarden metrics` exports when a job fails or is overdue."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import time_machine
import yaml
from prometheus_client.parser import text_string_to_metric_families

from jobs.observe import metrics
from tests.conftest import CI

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "deploy" / "prometheus" / "cronwarden-rules.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "cronwarden-rules.test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "cronwarden.json"
PROMETHEUS_RULE = REPO / "k8s-cronjobs" / "prometheusrule.yaml"
T0 = datetime(2026, 5, 4, 3, 0, tzinfo=timezone.utc)
EXPORTED = {"cronwarden_job_up", "cronwarden_job_state", "cronwarden_job_enabled", "cronwarden_job_paused",
            "cronwarden_job_overdue", "cronwarden_job_consecutive_failures",
            "cronwarden_job_last_run_timestamp_seconds", "cronwarden_job_last_success_timestamp_seconds",
            "cronwarden_job_last_duration_seconds", "cronwarden_job_next_due_timestamp_seconds",
            "cronwarden_job_missed_slots_total",
            "cronwarden_job_history_runs", "cronwarden_job_history_items", "cronwarden_history_retention_seconds",
            "cronwarden_queue_jobs", "cronwarden_queue_oldest_due_seconds", "cronwarden_emails",
            "cronwarden_email_oldest_pending_seconds"}


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if CI:
            pytest.fail("promtool is missing (Debian package prometheus); .ci/run installs it")
        pytest.skip("promtool not installed (Debian package prometheus)")
    return found


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def _names(expr: str) -> set[str]:
    return set(re.findall(r"\bcronwarden_[a-z_]+\b", expr))


def test_the_rules_are_valid_for_prometheus():
    result = _run("check", "rules", RULES.name, cwd=RULES.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


def test_the_rules_pass_their_unit_tests():
    result = _run("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test():
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    tested = {t["alertname"] for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for t in case["alert_rule_test"] if t.get("exp_alerts")}
    assert alerts == tested


def test_the_rules_and_the_dashboard_use_only_metrics_the_tool_exports(tmp_path):
    rules = yaml.safe_load(RULES.read_text())["groups"]
    used = set().union(*(_names(r["expr"]) for g in rules for r in g["rules"]))
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p.get("targets")]
    in_dashboard = set().union(*(_names(t["expr"]) for p in panels for t in p["targets"]))
    assert used and in_dashboard
    assert used <= EXPORTED and in_dashboard <= EXPORTED
    assert set(metrics.HEALTH_STATES) >= {"failing", "overdue", "stuck"}


def test_the_dashboard_is_an_importable_grafana_model():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}" and target["expr"].strip()


def test_the_kubernetes_prometheus_rule_carries_the_same_rules():
    resource = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert resource["apiVersion"] == "monitoring.coreos.com/v1" and resource["kind"] == "PrometheusRule"
    assert resource["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def _series(exposition: str) -> list[dict[str, str]]:
    """The exported samples as promtool input series, each constant for 20 minutes of 1-minute scrapes
    (promtool's series notation has no NaN or Inf: a never-finished run's duration, a never-again due time)."""
    out = []
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if math.isfinite(sample.value):
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                out.append({"series": f"{sample.name}{{{labels}}}", "values": f"{sample.value!r}x20"})
    return out


def test_the_alerts_fire_on_what_a_failing_and_an_overdue_job_export(workspace, cli, tmp_path):
    not_a_folder = workspace.path / "not-a-folder"
    not_a_folder.write_text("")
    workspace.write_config(f'[jobs.log-cleanup]\ntable = ""\nlog_directory = "{not_a_folder}"\n')
    with time_machine.travel(T0, tick=False):
        assert cli(workspace, "metrics").exit_code == 0  # the database first sees every job now
    with time_machine.travel(T0 + timedelta(days=3), tick=False):
        for _ in range(3):
            assert cli(workspace, "log-cleanup", "--force").exit_code == 1
        exposition = cli(workspace, "metrics").stdout
        states = {j["name"]: j["state"] for j in json.loads(cli(workspace, "status", "--json").stdout)["jobs"]}
    assert states["log-cleanup"] == "failing" and states["refresh-token-cleanup"] == "overdue"
    assert {f"{f.name}_total" if f.type == "counter" else f.name
            for f in text_string_to_metric_families(exposition)} == EXPORTED

    def firing(alert: str, state: str, severity: str) -> dict:
        """ALERTS, not exp_alerts: the annotations are the unit tests' business; here, who fires."""
        return {"eval_time": "10m", "expr": f'ALERTS{{alertname="{alert}",alertstate="firing"}}', "exp_samples": [
            {"labels": f'ALERTS{{alertname="{alert}",alertstate="firing",job_name="{name}",severity="{severity}"}}',
             "value": 1} for name, s in sorted(states.items()) if s == state]}

    (tmp_path / "rules.yml").write_text(RULES.read_text())
    (tmp_path / "e2e.yml").write_text(yaml.safe_dump({
        "rule_files": ["rules.yml"], "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": _series(exposition), "promql_expr_test": [
            firing("CronwardenJobFailing", "failing", "warning"),
            firing("CronwardenJobFailingRepeatedly", "failing", "critical"),
            firing("CronwardenJobOverdue", "overdue", "critical"),
            firing("CronwardenJobStuck", "stuck", "critical"),
            {"eval_time": "10m", "expr": 'ALERTS{alertname="CronwardenMetricsMissing"}', "exp_samples": []},
        ]}],
    }))
    result = _run("test", "rules", "e2e.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
