"""A user's own job, in their own package, registers through the `cronwarden.jobs` entry point."""

from __future__ import annotations

import json

import pytest


@pytest.mark.backend_neutral
def test_user_job_gets_a_subcommand_tracking_and_history(plugin_workspace, cli):
    help_text = cli(plugin_workspace, "--help").stdout
    assert "test-sleeper" in help_text
    result = cli(plugin_workspace, "test-sleeper", "--batches", "2", "--batch-seconds", "0", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["status"], report["counts"]) == ("succeeded", {"batches": 2})
    status = json.loads(cli(plugin_workspace, "status", "--json").stdout)
    assert {j["name"]: j["last_status"] for j in status["jobs"]}["test-sleeper"] == "succeeded"


@pytest.mark.backend_neutral
def test_user_job_configured_in_toml_loads_the_plugin_even_for_a_builtin_command(plugin_workspace, cli):
    plugin_workspace.write_config('[jobs.test-sleeper]\ninterval = "5m"\n')
    result = cli(plugin_workspace, "refresh-token-cleanup", "--json")
    assert result.exit_code == 0, result.stderr
    listed = json.loads(cli(plugin_workspace, "list", "--json").stdout)["jobs"]
    assert {j["job"]: j["schedule"] for j in listed}["test-sleeper"] == "every 5m"
