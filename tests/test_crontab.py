"""crontab.example is a working crontab: every line parses, runs a real command and mails only failures."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import datetime, timedelta

import pytest
from cronsim import CronSim, CronSimError

from tests.command_lines import (
    CRONTAB,
    ENV_ASSIGNMENT,
    for_window,
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
    assert ["--quiet", "run-due", "--for", "55s"] in commented
    assert "run-due" not in _invocations_by_command()


def test_each_job_ticks_at_least_as_often_as_its_schedule():
    by_command = _invocations_by_command()
    for job, period in recurring_jobs().items():
        for schedule, args, _ in by_command[job]:
            if period < timedelta(minutes=1):
                assert for_window(args) is not None, f"{job} runs every {period}: its line must tick with --for"
            else:
                assert _longest_gap(schedule) <= period, f"{job}: {schedule} ticks less often than {period}"


def _sub_minute_lines() -> list[tuple[str, timedelta, list[str], str]]:
    by_command = _invocations_by_command()
    found = [(job, period, args, command) for job, period in recurring_jobs().items()
             if period < timedelta(minutes=1) for schedule, args, command in by_command[job]]
    assert found
    for job, _, _, command in found:
        assert all(_longest_gap(s) == timedelta(minutes=1) for s, _, c in by_command[job] if c == command), \
            f"{job}: the line must start every minute"
    return found


def test_sub_minute_job_ticks_until_just_before_the_next_minutes_line():
    """The window leaves no slot of the minute unserved (at least 60 s minus the period) and ends before the
    next minute's process starts."""
    for job, period, args, _ in _sub_minute_lines():
        window = for_window(args)
        assert window is not None and timedelta(minutes=1) - period <= window < timedelta(minutes=1), \
            f"{job}: --for {window} leaves slots unserved or overlaps the next minute"


def test_sub_minute_line_is_not_cut_short_by_its_timeout():
    for job, _, args, command in _sub_minute_lines():
        words = next(w for w in simple_commands(command) if "cronwarden" in w)
        duration = [o for o in _timeout_words(words)[1:] if not o.startswith("-")][0]
        window = for_window(args)
        assert window is not None and _seconds(duration) > window.total_seconds() + 30, \
            f"{job}: timeout {duration} would stop the loop or its last run (smtp_timeout 30 s)"


def _timeout_words(words: list[str]) -> list[str]:
    """The `timeout ...` words before `cronwarden` in a simple command (empty when there is none)."""
    at = words.index("cronwarden")
    return words[words.index("timeout"):at] if "timeout" in words[:at] else []


def _seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return float(duration[:-1]) * units[duration[-1]] if duration[-1] in units else float(duration)


def test_every_line_runs_cronwarden_under_timeout_which_sends_sigterm_then_sigkill():
    for n, _, command in _cron_entries() + _commented_cron_entries():
        for words in simple_commands(command):
            if "cronwarden" not in words:
                continue
            options = _timeout_words(words)
            assert options, f"line {n}: cronwarden not run under timeout: {command}"
            assert not any(o.startswith(("--signal", "-s")) and "TERM" not in o for o in options), \
                f"line {n}: timeout must send SIGTERM (cronwarden then finishes or rolls back its batch)"
            assert any(o.startswith(("--kill-after", "-k")) for o in options), f"line {n}: no --kill-after"


def _check_line() -> str:
    (_, _, command), = [(n, schedule, command) for n, schedule, command in _cron_entries()
                        if any(global_options_and_command(a)[1] == ["check"] for a in shell_invocations(command))]
    return command


def test_check_reports_a_silent_database_itself_before_its_timeout_stops_it():
    from jobs.config import RetryPolicy
    from jobs.host_loss import HostLossBounds

    bound = RetryPolicy().max_time.total_seconds() + HostLossBounds().mysql_client()["read_timeout"]
    words = next(w for w in simple_commands(_check_line()) if "cronwarden" in w)
    duration = [o for o in _timeout_words(words)[1:] if not o.startswith("-")][0]
    assert _seconds(duration) > bound + 30, f"check's timeout {duration} leaves no room for its own exit 75"


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash, timeout")
def test_a_check_stopped_by_timeout_still_mails_a_line(tmp_path):
    command = _check_line()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "timeout"
    fake.write_text('#!/bin/sh\nexit "$FAKE_EXIT"\n', encoding="utf-8")  # what timeout returned
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    printed = {code: subprocess.run(["bash", "-c", command], env={**env, "FAKE_EXIT": str(code)},
                                    capture_output=True, text=True, timeout=30).stdout for code in (0, 1, 75, 124)}
    assert printed[0] == printed[1] == printed[75] == "", "cronwarden prints its own lines; nothing is added"
    assert "stopped by timeout" in printed[124]


@pytest.mark.skipif(shutil.which("timeout") is None, reason="coreutils timeout is not installed")
def test_the_comments_give_the_exit_code_timeout_really_returns():
    stopped = subprocess.run(["timeout", "0.2", "sh", "-c", "trap 'exit 143' TERM; while :; do sleep 0.05; done"],
                             timeout=30)
    assert stopped.returncode == 124
    text = CRONTAB.read_text(encoding="utf-8")
    assert "exits 124" in text and "exits 143" not in text


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
