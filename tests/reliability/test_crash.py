"""reliability/crash.py, short: SIGKILL and SIGTERM at random moments, on every database."""

from __future__ import annotations

import json

import crash


def test_kills_and_stops_at_random_moments_lose_nothing_and_free_the_lock(short_run_results):
    assert crash.main(["--rounds", "2", "--max-seconds", "300", "--seed", "7"]) == 0
    ledgers = json.loads((short_run_results / "crash.json").read_text())["ledgers"]
    assert len(ledgers) == 18  # 2 signals x 3 databases x (tokens with 2 locks + emails)
    assert all(lg["rounds"] == 2 and lg["violations"] == 0 for lg in ledgers)
    assert sum(sum(lg["faults"].values()) for lg in ledgers) == 36
