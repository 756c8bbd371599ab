"""crontab.example is a working crontab: every line parses, runs a real command and mails only failures."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import datetime, timedelta

import pytest
from cronsim import CronSim, CronSimError

from tests.command_lines import (
    CRONTAB,
    ENV_ASSIGNMENT,
    global_options_and_command,
    help_exit_code,
    real_commands,
    recurring_jobs,
    shell_invocations,
    simple_commands,
)


def _active_lines() -> list[tuple[int, str]]:
    lines = CRONTAB.read_text(encoding="utf-8").splitlines()
    return [(n, line) for n, line in enumerate(lines, 1) if line.strip() and not line.lstrip().startswith("#")]


def _cron_entries() -> list[tuple[int, str, str]]:
    """(line number, five time fields, command) of every active cron line."""
    entries = []
    for n, line in _active_lines():
        if ENV_ASSIGNMENT.match(line):
            continue
        fields = line.split(None, 5)
        entries.append((n, " ".join(fields[:5]), fields[5] if len(fields) == 6 else ""))
    return entries


def _environment() -> dict[str, str]:
    return dict(line.split("=", 1) for _, line in _active_lines() if ENV_ASSIGNMENT.match(line))


def _commented_cron_entries() -> list[tuple[int, str, str]]:
    """Cron lines shown commented out as alternatives (`# * * * * * cronwarden ...`)."""
    entries = []
    for n, line in enumerate(CRONTAB.read_text(encoding="utf-8").splitlines(), 1):
        if not line.startswith("#"):
            continue
        fields = line.lstrip("#").split(None, 5)
        if len(fields) < 6 or "cronwarden" not in fields[5]:
            continue
        try:
            CronSim(" ".join(fields[:5]), datetime(2026, 1, 1))
        except CronSimError:
            continue
        entries.append((n, " ".join(fields[:5]), fields[5]))
    return entries


def _commented_commands() -> list[list[str]]:
    """Commands shown indented in comments (`#   cronwarden --quiet db upgrade`), as cronwarden arguments.

    Indented by at least two spaces after the `#`, unlike prose, which has one.
    """
    found = []
    for line in CRONTAB.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#  "):
            continue
        words = line.lstrip("#").split()
        while words and ENV_ASSIGNMENT.match(words[0]):
            words.pop(0)
        if words and words[0] == "cronwarden":
            found.extend(shell_invocations(" ".join(words)))
    return found


def _invocations_by_command() -> dict[str, list[tuple[str, list[str], str]]]:
    """Command path -> [(schedule, cronwarden arguments, whole command line)] of the active lines."""
    result: dict[str, list[tuple[str, list[str], str]]] = {}
    for _, schedule, command in _cron_entries():
        for args in shell_invocations(command):
            path = " ".join(global_options_and_command(args)[1])
            result.setdefault(path, []).append((schedule, args, command))
    return result


def _longest_gap(schedule: str) -> timedelta:
    """The longest wait between two ticks of a cron expression, over eight days (a weekly pattern) or 1000 ticks."""
    ticks = CronSim(schedule, datetime(2026, 1, 5))
    times = [next(ticks)]
    while len(times) < 1000 and times[-1] - times[0] < timedelta(days=8):
        times.append(next(ticks))
    return max(b - a for a, b in zip(times, times[1:]))


def test_every_cron_line_has_five_time_fields_that_parse():
    entries = _cron_entries()
    assert entries
    for n, schedule, command in entries:
        assert command, f"line {n}: no command after the five time fields"
        assert not schedule.startswith("@"), f"line {n}: use five fields, not a nickname"
        CronSim(schedule, datetime(2026, 1, 1))


def test_every_cron_line_runs_a_real_cronwarden_command(capsys):
    commands = real_commands()
    for n, _, command in _cron_entries() + _commented_cron_entries():
        invocations = shell_invocations(command)
        assert invocations, f"line {n} runs no cronwarden command: {command}"
        for args in invocations:
            path = " ".join(global_options_and_command(args)[1])
            assert path in commands, f"line {n}: {args} names no cronwarden command"
            code = help_exit_code(args)
            assert code == 0, f"line {n}: cronwarden {' '.join(args)} is refused: {capsys.readouterr().err}"


def test_every_cron_line_is_quiet_so_cron_mails_only_failures():
    for n, _, command in _cron_entries() + _commented_cron_entries():
        for args in shell_invocations(command):
            options, _ = global_options_and_command(args)
            assert "--quiet" in options or "-q" in options, f"line {n}: cronwarden {' '.join(args)} without --quiet"


def test_monitoring_check_runs_from_cron():
    assert "check" in set(_invocations_by_command())


def test_every_recurring_job_has_its_own_line():
    by_command = _invocations_by_command()
    for job in recurring_jobs():
        assert job in by_command, f"{job} has no line"


def test_one_shot_admin_seed_is_not_scheduled_but_shown_for_deploy(capsys):
    assert "admin-seed" not in _invocations_by_command()
    commented = {" ".join(global_options_and_command(args)[1]): args for args in _commented_commands()}
    assert {"db upgrade", "admin-seed"} <= set(commented)
    for args in commented.values():
        assert help_exit_code(args) == 0, capsys.readouterr().err


def test_run_due_alternative_is_shown_commented_out():
    commented = [args for _, _, command in _commented_cron_entries() for args in shell_invocations(command)]
    assert ["--quiet", "run-due"] in commented
    assert "run-due" not in _invocations_by_command()


def test_each_job_ticks_at_least_as_often_as_its_schedule():
    by_command = _invocations_by_command()
    for job, period in recurring_jobs().items():
        for schedule, _, command in by_command[job]:
            if period < timedelta(minutes=1):
                assert re.search(r"\bwhile\b", command), f"{job} runs every {period}: its line must loop"
            else:
                assert _longest_gap(schedule) <= period, f"{job}: {schedule} ticks less often than {period}"


def test_sub_minute_job_loops_within_the_minute():
    by_command = _invocations_by_command()
    for job, period in recurring_jobs().items():
        if period >= timedelta(minutes=1):
            continue
        for schedule, _, command in by_command[job]:
            assert _longest_gap(schedule) == timedelta(minutes=1), f"{job}: the loop must start every minute"
            seconds = re.search(r"SECONDS\s*<\s*(\d+)", command)
            assert seconds and int(seconds.group(1)) < 60, f"{job}: the loop must end within its minute"
            pause = re.search(r"\bsleep\s+(\d+)", command)
            assert pause and int(pause.group(1)) <= period.total_seconds(), f"{job}: sleeps longer than {period}"


def test_long_jobs_run_under_timeout_which_sends_sigterm_then_sigkill():
    by_command = _invocations_by_command()
    for job in recurring_jobs():
        for _, _, command in by_command[job]:
            for words in simple_commands(command):
                if "cronwarden" not in words:
                    continue
                assert "timeout" in words[:words.index("cronwarden")], f"{job}: not run under timeout"
                options = words[words.index("timeout") + 1:words.index("cronwarden")]
                assert not any(o.startswith(("--signal", "-s")) and "TERM" not in o for o in options), \
                    f"{job}: timeout must send SIGTERM (cronwarden then finishes or rolls back its batch)"
                assert any(o.startswith(("--kill-after", "-k")) for o in options), f"{job}: no --kill-after"


def test_environment_sets_shell_path_utc_mail_and_env_file():
    env = _environment()
    assert env["SHELL"] == "/bin/bash"
    assert env["CRON_TZ"] == "UTC"
    assert "@" in env["MAILTO"]
    assert env["BASH_ENV"].startswith("/")
    assert "/opt/cronwarden/bin" in env["PATH"].split(":"), "the venv the README and the image install into"


def test_no_secret_in_the_crontab_itself():
    for _, line in _active_lines():
        assert "CRONWARDEN_DATABASE_URL" not in line and "PASSWORD" not in line.upper(), line


def test_commands_have_no_bare_percent_which_cron_turns_into_a_newline():
    for n, _, command in _cron_entries() + _commented_cron_entries():
        assert not re.search(r"(?<!\\)%", command), f"line {n}: unescaped % in {command}"


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_every_command_is_valid_bash():
    for n, _, command in _cron_entries() + _commented_cron_entries():
        checked = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
        assert checked.returncode == 0, f"line {n}: {checked.stderr}"
