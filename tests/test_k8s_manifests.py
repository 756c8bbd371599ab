"""k8s-cronjobs/ holds valid Kubernetes objects that run real cronwarden commands safely.

Every file, and the kustomization rendered by a small renderer below (no kubectl needed), is
validated offline against the Kubernetes JSON schema with kubernetes-validate --strict. The schema
does not check enum values or policy, so those are asserted here, per CronJob.
"""

from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
import tomllib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import kubernetes_validate
import pytest
import yaml
from cronsim import CronSim

from tests.command_lines import (
    for_window,
    global_options_and_command,
    help_exit_code,
    real_commands,
    recurring_jobs,
    shell_invocations,
)

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "k8s-cronjobs"
# 1.37 is the current release (the newest kubernetes-validate ships); 1.31 is the oldest the manifests
# support, the release in which podFailurePolicy (the deploy Job) became GA.
KUBERNETES_VERSIONS = ("1.31", "1.37")
IMAGE_REPOSITORY = "registry.example.com/cronwarden"
RENDERED_KEYS = {"apiVersion", "kind", "resources", "labels", "images"}
POD_START = timedelta(seconds=5)  # from a CronJob's tick to cronwarden running in its pod, with room


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


OPTIONAL = {"secret.example.yaml", "prometheusrule.yaml"}
"""Not in the kustomization: a template to fill in, and a resource that needs prometheus-operator's CRD."""


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name not in ("kustomization.yaml", "prometheusrule.yaml"))


def _kustomization() -> dict[str, Any]:
    return _documents(K8S / "kustomization.yaml")[0]


def render_kustomization() -> list[dict[str, Any]]:
    """What `kubectl kustomize k8s-cronjobs` prints, for the fields this kustomization uses (a fresh copy)."""
    return copy.deepcopy(_rendered())


@functools.lru_cache(maxsize=1)
def _rendered() -> list[dict[str, Any]]:
    kustomization = _kustomization()
    unknown = set(kustomization) - RENDERED_KEYS
    assert not unknown, f"extend render_kustomization() for {sorted(unknown)}"
    objects = [doc for name in kustomization["resources"] for doc in _documents(K8S / name)]
    for entry in kustomization.get("labels", []):
        assert not entry.get("includeSelectors") and not entry.get("includeTemplates"), "renderer: pairs only"
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(entry["pairs"])
    for image in kustomization.get("images", []):
        for obj in objects:
            for container in _all_containers(obj):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    return objects


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if obj["kind"] == "Job":
        return obj["spec"]["template"]["spec"]
    return {}


def _job_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]


def _all_containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    pod = _pod_spec(obj)
    return pod.get("initContainers", []) + pod.get("containers", [])


def _workloads() -> list[dict[str, Any]]:
    return [obj for obj in render_kustomization() if obj["kind"] in ("CronJob", "Job")]


def _cronjobs() -> list[dict[str, Any]]:
    return [obj for obj in render_kustomization() if obj["kind"] == "CronJob"]


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def _cronwarden_args(container: dict[str, Any]) -> list[list[str]]:
    """The cronwarden arguments a container runs: its args (ENTRYPOINT is cronwarden) or its sh script."""
    command = container.get("command")
    if not command:
        return [container["args"]]
    assert command[:2] == ["/bin/sh", "-c"], f"{container['name']}: unexpected command {command}"
    return shell_invocations(container["args"][0])


def _command_path(args: list[str]) -> str:
    return " ".join(global_options_and_command(args)[1])


def _cronjob_for(job: str) -> dict[str, Any]:
    found = [c for c in _cronjobs() if any(_command_path(a) == job for a in _cronwarden_args(_all_containers(c)[0]))]
    assert len(found) == 1, f"{job}: {len(found)} CronJobs"
    return found[0]


def _for_window(obj: dict[str, Any]) -> timedelta | None:
    """The `--for` window of the CronJob's cronwarden command, if it has one."""
    (args,) = _cronwarden_args(_pod_spec(obj)["containers"][0])
    return for_window(args)


def _config_text() -> str:
    configmap = next(d for d in _documents(K8S / "configmap.yaml") if d["kind"] == "ConfigMap")
    return configmap["data"]["cronwarden.toml"]


def _config():
    from jobs.config import load
    from jobs.registry import builtin_specs

    return load(tomllib.loads(_config_text()), builtin_specs(), environ={"CRONWARDEN_DATABASE_URL": "sqlite://"})


def _quantity(value: str | int) -> float:
    """A Kubernetes quantity such as 100m, 1, 128Mi, as a number."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", str(value))
    assert match and match.group(2) in units | {"": 1}, f"unsupported quantity {value!r}"
    return float(match.group(1)) * units.get(match.group(2), 1)


def _image_uid() -> int:
    user = [line.split()[1] for line in (REPO / "Containerfile").read_text().splitlines() if line.startswith("USER ")]
    return int(user[-1].split(":")[0])


def _ticks_gap(schedule: str, zone: str) -> timedelta:
    """The longest wait between two ticks, over eight days (a weekly pattern) or 1000 ticks."""
    ticks = CronSim(schedule, datetime(2026, 3, 1, tzinfo=ZoneInfo(zone)))
    times = [next(ticks)]
    while len(times) < 1000 and times[-1] - times[0] < timedelta(days=8):
        times.append(next(ticks))
    return max(b - a for a, b in zip(times, times[1:]))


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_file_validates_against_the_kubernetes_schema(version):
    files = _manifest_files()
    assert len(files) >= 7
    for path in files:
        for doc in _documents(path):
            kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_rendered_kustomization_validates_against_the_kubernetes_schema(version):
    rendered = render_kustomization()
    assert {obj["kind"] for obj in rendered} == {"ConfigMap", "CronJob", "Job"}
    for obj in rendered:
        kubernetes_validate.validate(obj, version, strict=True)


def test_schema_validation_rejects_an_unknown_field():
    cronjob = _cronjobs()[0]
    cronjob["spec"]["concurrencyPolicyy"] = "Forbid"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(cronjob, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_renderer_matches_kubectl_kustomize():
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=True).stdout
    key = lambda obj: (obj["kind"], obj["metadata"]["name"])  # noqa: E731
    assert sorted(yaml.safe_load_all(out), key=key) == sorted(render_kustomization(), key=key)


def test_kustomization_lists_every_manifest_except_the_optional_ones():
    listed = set(_kustomization()["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - OPTIONAL - {"kustomization.yaml"}


def test_each_recurring_job_has_one_cronjob_and_admin_seed_a_one_shot_job():
    for job in recurring_jobs():
        _cronjob_for(job)
    jobs = [obj for obj in _workloads() if obj["kind"] == "Job"]
    assert [[_command_path(a) for c in _all_containers(j) for a in _cronwarden_args(c)] for j in jobs] == \
        [["db upgrade", "admin-seed"]]
    assert all(_command_path(a) != "admin-seed" for c in _cronjobs() for a in _cronwarden_args(_all_containers(c)[0]))


def test_every_container_runs_a_real_cronwarden_command(capsys):
    commands = real_commands()
    for obj in _workloads():
        for container in _all_containers(obj):
            invocations = _cronwarden_args(container)
            assert invocations, f"{obj['metadata']['name']}: runs no cronwarden command"
            for args in invocations:
                assert _command_path(args) in commands, f"{obj['metadata']['name']}: {args}"
                code = help_exit_code(args)
                assert code == 0, f"{obj['metadata']['name']}: cronwarden {args} refused: {capsys.readouterr().err}"


def test_every_cronjob_forbids_overlap_and_leaves_retries_to_cronwarden():
    batch_retry = _config().retry.max_time
    for cronjob in _cronjobs():
        name, spec, job, pod = cronjob["metadata"]["name"], cronjob["spec"], _job_spec(cronjob), _pod_spec(cronjob)
        assert spec["concurrencyPolicy"] == "Forbid", name
        assert spec["timeZone"] == "Etc/UTC", name
        assert ZoneInfo(spec["timeZone"]).utcoffset(datetime(2026, 7, 1)) == timedelta(0), name
        assert spec["startingDeadlineSeconds"] > 0, name
        assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1, name
        assert job["backoffLimit"] == 0, f"{name}: cronwarden owns retries; a busy lock exits 0"
        assert pod["restartPolicy"] == "Never", name
        grace = timedelta(seconds=pod["terminationGracePeriodSeconds"])
        assert grace > batch_retry, f"{name}: grace period shorter than a batch with its in-process retries"
        assert 0 < pod["terminationGracePeriodSeconds"] < job["activeDeadlineSeconds"], name


def test_every_cronjob_and_job_is_bounded_by_an_active_deadline():
    for obj in _workloads():
        deadline = _job_spec(obj).get("activeDeadlineSeconds")
        assert isinstance(deadline, int) and deadline > 0, f"{obj['metadata']['name']}: no activeDeadlineSeconds"


def test_check_reports_a_silent_database_itself_before_its_deadline():
    """A database that never answers is exit 75 and one line within [retry] max_time plus one attempt's
    timeout; the deadline leaves room for that, so the failed Job carries the reason."""
    from jobs.host_loss import HostLossBounds

    config = _config()
    bounds = HostLossBounds(config.locks.host_loss_bound.total_seconds())
    silent = config.retry.max_time.total_seconds() + max(bounds.connect_timeout, bounds.mysql_client()["read_timeout"])
    assert _job_spec(_cronjob_for("check"))["activeDeadlineSeconds"] > silent + 30


def test_job_timeouts_stop_runs_before_kubernetes_deadlines():
    config = _config()
    for name, job in config.jobs.items():
        if job.timeout is None or name not in recurring_jobs():
            continue
        deadline = _job_spec(_cronjob_for(name))["activeDeadlineSeconds"]
        assert job.timeout < timedelta(seconds=deadline), f"{name}: timeout {job.timeout} >= {deadline}s"


def test_cronjob_schedules_parse_and_tick_at_least_as_often_as_the_job_is_due():
    config = _config()
    for job in recurring_jobs():
        cronjob = _cronjob_for(job)
        period = config.job(job).schedule.period()
        gap = _ticks_gap(cronjob["spec"]["schedule"], cronjob["spec"]["timeZone"])
        if period >= timedelta(minutes=1):
            assert gap <= period, f"{job}: ticks every {gap}, due every {period}"
        else:
            assert gap == timedelta(minutes=1), f"{job}: the --for process must start every minute"
            assert _for_window(cronjob) is not None, f"{job} runs every {period}: it must tick with --for"
    check = _cronjob_for("check")
    CronSim(check["spec"]["schedule"], datetime(2026, 1, 1))


def test_sub_minute_window_serves_every_slot_and_ends_before_the_next_minute_and_its_deadline():
    """At least 60 s minus the period (no slot of the minute unserved); over before the next minute's pod
    (its own start-up included); and the deadline leaves the last run its smtp_timeout and a batch's retries."""
    config = _config()
    for job, period in recurring_jobs().items():
        if period >= timedelta(minutes=1):
            continue
        cronjob = _cronjob_for(job)
        window = _for_window(cronjob)
        assert window is not None
        assert window >= timedelta(minutes=1) - period, f"{job}: --for {window} leaves slots of the minute unserved"
        assert POD_START + window < timedelta(minutes=1), f"{job}: still running when the next minute's pod starts"
        last_run = config.job(job).settings.smtp_timeout + config.retry.max_time
        deadline = timedelta(seconds=_job_spec(cronjob)["activeDeadlineSeconds"])
        assert POD_START + window + last_run < deadline, f"{job}: the deadline cuts the window's last run"


def test_every_pod_is_non_root_read_only_and_unprivileged():
    for obj in _workloads():
        pod = _pod_spec(obj)
        assert pod["automountServiceAccountToken"] is False, obj["metadata"]["name"]
        for container in _all_containers(obj):
            where = f"{obj['metadata']['name']}/{container['name']}"
            ctx = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
            assert ctx["runAsNonRoot"] is True, where
            assert isinstance(ctx["runAsUser"], int) and ctx["runAsUser"] > 0, where
            assert ctx["readOnlyRootFilesystem"] is True, where
            assert ctx["allowPrivilegeEscalation"] is False, where
            assert ctx.get("privileged", False) is False, where
            assert ctx["capabilities"]["drop"] == ["ALL"] and not ctx["capabilities"].get("add"), where
            assert ctx["seccompProfile"]["type"] == "RuntimeDefault", where


def test_pods_run_as_the_images_user():
    uid = _image_uid()
    for obj in _workloads():
        assert _pod_spec(obj)["securityContext"]["runAsUser"] == uid, obj["metadata"]["name"]


def test_tmp_is_a_writable_empty_dir_on_the_read_only_root():
    for obj in _workloads():
        pod = _pod_spec(obj)
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in _all_containers(obj):
            tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert len(tmp) == 1 and "emptyDir" in volumes[tmp[0]["name"]], f"{obj['metadata']['name']}"
            assert not tmp[0].get("readOnly"), obj["metadata"]["name"]


def test_every_container_has_resource_requests_within_limits():
    for obj in _workloads():
        for container in _all_containers(obj):
            resources = container["resources"]
            for kind in ("cpu", "memory"):
                request, limit = resources["requests"][kind], resources["limits"][kind]
                assert _quantity(request) <= _quantity(limit), f"{obj['metadata']['name']}: {kind}"


def test_images_are_the_released_version_from_one_place():
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    images = {c["image"] for obj in _workloads() for c in _all_containers(obj)}
    assert images == {f"{IMAGE_REPOSITORY}:{version}"}
    assert all(c.get("imagePullPolicy") in ("IfNotPresent", "Always") for obj in _workloads()
               for c in _all_containers(obj))


def test_file_env_vars_point_at_mounted_secret_keys_and_config():
    configmap = next(d for d in _documents(K8S / "configmap.yaml") if d["kind"] == "ConfigMap")
    secret_keys = set(next(d for d in _documents(K8S / "secret.example.yaml"))["stringData"])
    for obj in _workloads():
        pod = _pod_spec(obj)
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in _all_containers(obj):
            mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
            env = _env(container)
            assert "CRONWARDEN_DATABASE_URL" not in env, "the URL carries a password: use the _FILE twin"
            assert env["CRONWARDEN_DATABASE_URL_FILE"]
            for name, value in env.items():
                if not name.startswith("CRONWARDEN_") or not (name.endswith("_FILE") or name == "CRONWARDEN_CONFIG"):
                    continue
                directory, _, file = value.rpartition("/")
                volume = mounts[directory]
                if name == "CRONWARDEN_CONFIG":
                    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
                    assert file in configmap["data"]
                else:
                    items = {i["path"]: i["key"] for i in volume["secret"]["items"]}
                    assert items[file] in secret_keys, f"{name}: {value}"


def test_configmap_config_is_valid_for_the_tool(sqlite_workspace, tmp_path):
    config = tmp_path / "cronwarden.toml"
    config.write_text(_config_text(), encoding="utf-8")
    url_file = tmp_path / "database-url"
    url_file.write_text(sqlite_workspace.db_url + "\n", encoding="utf-8")
    env = sqlite_workspace.env(CRONWARDEN_DATABASE_URL_FILE=str(url_file))
    del env["CRONWARDEN_DATABASE_URL"]
    result = sqlite_workspace.run("--config", str(config), "list", env=env)
    assert result.returncode == 0, result.stderr
    for job in recurring_jobs():
        assert job in result.stdout


def test_configmap_holds_no_database_url_or_password():
    raw = tomllib.loads(_config_text())
    assert "database_url" not in raw
    assert not [key for table in raw.get("jobs", {}).values() for key in table if "password" in key]


def test_secret_example_holds_only_change_me_placeholders_for_every_secret():
    secret = _documents(K8S / "secret.example.yaml")[0]
    assert secret["kind"] == "Secret"
    assert set(secret["stringData"]) == {"database-url", "smtp-password", "admin-password"}
    assert all("CHANGE-ME" in value for value in secret["stringData"].values())


def test_deploy_job_upgrades_the_schema_before_seeding_the_admin():
    job = next(obj for obj in _workloads() if obj["kind"] == "Job")
    pod = _pod_spec(job)
    assert [_command_path(a) for c in pod["initContainers"] for a in _cronwarden_args(c)] == ["db upgrade"]
    assert [_command_path(a) for c in pod["containers"] for a in _cronwarden_args(c)] == ["admin-seed"]
    assert pod["restartPolicy"] == "Never"
    fail_codes = {code for rule in job["spec"]["podFailurePolicy"]["rules"] if rule["action"] == "FailJob"
                  for code in rule.get("onExitCodes", {}).get("values", [])}
    assert {1, 2, 78} <= fail_codes and 75 not in fail_codes, "retry only an unreachable database"


def test_manifests_are_valid_yaml_without_tabs_or_duplicate_documents():
    seen = set()
    for path in _manifest_files() + [K8S / "kustomization.yaml"]:
        text = path.read_text(encoding="utf-8")
        assert "\t" not in text, path.name
        for doc in _documents(path):
            key = (doc["kind"], doc.get("metadata", {}).get("name"))
            assert key not in seen, key
            seen.add(key)
