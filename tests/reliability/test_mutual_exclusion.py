"""reliability/mutual_exclusion.py, short: every lock backend, a few rounds of 16 invocations at once."""

from __future__ import annotations

import json

import mutual_exclusion
import pytest

BUDGET = 150  # seconds, the script's --max-seconds; pytest's timeout leaves room for its set-up
pytestmark = [pytest.mark.reliability, pytest.mark.timeout(BUDGET + 120)]


def test_sixteen_invocations_per_due_window_make_one_run_on_every_lock_backend(short_run_results):
    assert mutual_exclusion.main(["--rounds", "2", "--max-seconds", str(BUDGET)]) == 0
    ledgers = json.loads((short_run_results / "mutual_exclusion.json").read_text())["ledgers"]
    combos = {(lg["backend"], lg["scenario"].rsplit(" ", 1)[-1]) for lg in ledgers if lg["rounds"] == 2}
    assert combos == {("sqlite", "file"), ("postgres", "postgres"), ("mariadb", "mysql"),
                      ("sqlite", "lease"), ("postgres", "lease"), ("mariadb", "lease")}
    assert all(lg["violations"] == 0 and lg["checks"] > 0 for lg in ledgers)
