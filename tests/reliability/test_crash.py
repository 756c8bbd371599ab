"""reliability/crash.py, short: SIGKILL at random moments of both jobs, on every database and both lock kinds."""

from __future__ import annotations

import json

import crash
import pytest

BUDGET = 120  # seconds, the script's --max-seconds; pytest's timeout leaves room for its set-up
pytestmark = [pytest.mark.reliability, pytest.mark.timeout(BUDGET + 120)]


def _ledgers(folder) -> list[dict]:
    return json.loads((folder / "crash.json").read_text())["ledgers"]


def test_kills_during_token_cleanup_leave_whole_batches_and_free_the_database_lock(short_run_results):
    assert crash.main(["--rounds", "3", "--max-seconds", str(BUDGET), "--seed", "7", "--jobs", "tokens",
                       "--locks", "default"]) == 0
    ledgers = _ledgers(short_run_results)
    assert [lg["backend"] for lg in ledgers] == ["sqlite", "postgres", "mariadb"]
    assert all(lg["rounds"] == 3 and lg["violations"] == 0 and sum(lg["faults"].values()) == 3 for lg in ledgers)


def test_kills_during_email_sending_lose_no_email_and_free_the_lease(short_run_results):
    assert crash.main(["--rounds", "2", "--max-seconds", str(BUDGET), "--seed", "8", "--jobs", "emails",
                       "--locks", "lease", "--lease-run", "0"]) == 0
    ledgers = _ledgers(short_run_results)
    assert [lg["backend"] for lg in ledgers] == ["sqlite", "postgres", "mariadb"]
    assert all(lg["rounds"] == 2 and lg["violations"] == 0 and sum(lg["faults"].values()) == 2 for lg in ledgers)
    assert all(lg["figures"]["emails"] == 3 * 150 for lg in ledgers)  # the warm-up's and two rounds', all sent
