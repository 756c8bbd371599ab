"""Global options work on either side of the subcommand: `cronwarden JOB --quiet` as `cronwarden --quiet JOB`."""

from __future__ import annotations

import json

import pytest

from tests.conftest import refusing_table

JOB = "refresh-token-cleanup"


def _both(option: list[str], command: list[str]) -> list[list[str]]:
    """The option before the subcommand, then after it."""
    return [option + command, command + option]


@pytest.mark.parametrize("position", [0, 1], ids=["before", "after"])
def test_quiet_silences_a_successful_run(position, sqlite_workspace, cli) -> None:
    result = cli(sqlite_workspace, *_both(["--quiet"], [JOB, "--force"])[position])
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize("position", [0, 1], ids=["before", "after"])
def test_verbose_logs_the_traceback_of_a_failure(position, sqlite_workspace, cli) -> None:
    refusing_table(sqlite_workspace.db_url)
    sqlite_workspace.write_config(f'[jobs.{JOB}]\ntable = "nope"\n')
    result = cli(sqlite_workspace, *_both(["--verbose"], [JOB, "--force"])[position])
    assert result.exit_code == 1
    assert "Traceback" in result.stderr


@pytest.mark.parametrize("position", [0, 1], ids=["before", "after"])
def test_json_prints_one_object(position, sqlite_workspace, cli) -> None:
    result = cli(sqlite_workspace, *_both(["--json"], ["status"])[position])
    assert result.exit_code == 0, result.stderr
    assert {j["name"] for j in json.loads(result.stdout)["jobs"]} >= {JOB}


@pytest.mark.parametrize("position", [0, 1], ids=["before", "after"])
def test_log_format_json_applies_to_every_line(position, sqlite_workspace, cli) -> None:
    result = cli(sqlite_workspace, *_both(["--log-format", "json"], [JOB, "--force"])[position])
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert lines and all(entry["job"] == JOB for entry in lines)


@pytest.mark.parametrize("position", [0, 1], ids=["before", "after"])
def test_config_names_the_file_to_read(position, sqlite_workspace, cli) -> None:
    other = sqlite_workspace.path / "other.toml"
    other.write_text(f"[jobs.{JOB}]\nenabled = false\n", encoding="utf-8")
    result = cli(sqlite_workspace, *_both(["--config", str(other)], ["list", "--json"])[position])
    assert result.exit_code == 0, result.stderr
    assert {j["job"]: j["enabled"] for j in json.loads(result.stdout)["jobs"]}[JOB] is False


@pytest.mark.parametrize("position", [0, 1], ids=["before", "after"])
def test_database_url_names_the_database(position, sqlite_workspace, cli) -> None:
    url = f"sqlite:///{sqlite_workspace.path / 'other.db'}"
    result = cli(sqlite_workspace, *_both([f"--database-url={url}"], ["db", "upgrade"])[position])
    assert result.exit_code == 0, result.stderr
    assert (sqlite_workspace.path / "other.db").exists()


def test_an_option_value_that_looks_like_a_global_option_stays_with_its_option(sqlite_workspace, cli) -> None:
    result = cli(sqlite_workspace, "history", "--json", "--limit", "5", "--quiet")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"runs": []}
    keyed = cli(sqlite_workspace, "enqueue", "export-user", "--key", "--quiet", "--arg", "user_id=1",
                "--arg", f"to={sqlite_workspace.path}")
    assert keyed.exit_code == 0, keyed.stderr
    shown = json.loads(cli(sqlite_workspace, "queue", "show", keyed.stdout.strip(), "--json").stdout)
    assert shown["idempotency_key"] == "--quiet"
