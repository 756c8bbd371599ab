"""A bad command line gets one line naming the problem and where the help is, and exit 2."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("args, fragment", [
    (["refresh-token-cleanup", "--retention-days", "abc"], "--retention-days"),
    (["refresh-token-cleanup", "--bogus"], "--bogus"),
    (["no-such-command"], "no-such-command"),
    (["history", "--limit", "-1"], "--limit"),
    (["queue", "show", "abc"], "ID"),
    (["--log-format", "xml", "list"], "--log-format"),
])
def test_a_usage_error_is_one_line_with_exit_2(sqlite_workspace, cli, args, fragment):
    result = cli(sqlite_workspace, *args)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cronwarden: error: ") and fragment in lines[0]
    assert "--help" in lines[0] and result.stdout == ""


def test_a_command_group_alone_shows_its_help(sqlite_workspace, cli):
    result = cli(sqlite_workspace, "queue")
    assert result.exit_code == 2
    assert "Usage: cronwarden queue" in result.stdout + result.stderr


def test_ctrl_c_in_a_command_exits_130_without_a_traceback(sqlite_workspace, cli, monkeypatch):
    """A KeyboardInterrupt outside a job run (where the signal handlers turn it into `interrupted`): the
    exit code of SIGINT, never a traceback."""
    import jobs.operations.status

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs.operations.status, "status", interrupted)
    result = cli(sqlite_workspace, "status")
    assert result.exit_code == 130
    assert "Traceback" not in result.stderr and "AttributeError" not in result.stderr
