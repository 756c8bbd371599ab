"""End-to-end basics of refresh-token-cleanup through the real CLI on every database."""

from __future__ import annotations

import json


def test_forced_run_succeeds_and_is_recorded(workspace, cli):
    result = cli(workspace, "refresh-token-cleanup", "--force", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "succeeded"
    assert report["counts"] == {"deleted": 0}
    history = json.loads(cli(workspace, "history", "--json").stdout)["runs"]
    assert [r["status"] for r in history] == ["succeeded"]
