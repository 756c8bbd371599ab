"""reliability/graceful_stop.py, short: SIGTERM at random moments of both jobs, on every database and both locks."""

from __future__ import annotations

import json

import graceful_stop
import pytest

BUDGET = 150  # seconds, the script's --max-seconds; pytest's timeout leaves room for its set-up
pytestmark = [pytest.mark.reliability, pytest.mark.timeout(BUDGET + 120)]


def test_sigterm_at_random_moments_exits_143_records_interrupted_and_leaves_nothing_partial(short_run_results):
    # The exit-time bound is a figure of the full run; here a loaded machine must not fail the test.
    assert graceful_stop.main(["--rounds", "2", "--max-seconds", str(BUDGET), "--seed", "9", "--lease-run", "0",
                               "--exit-slack", "60"]) == 0
    ledgers = json.loads((short_run_results / "graceful_stop.json").read_text())["ledgers"]
    assert len(ledgers) == 12  # 3 databases x 2 jobs x 2 locks
    assert all(lg["rounds"] == 2 and lg["violations"] == 0 and sum(lg["faults"].values()) == 2 for lg in ledgers)
