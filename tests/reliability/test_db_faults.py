"""reliability/db_faults.py, short: one round of every database fault, private servers stopped and killed included."""

from __future__ import annotations

import json

import db_faults
import pytest

BUDGET = 400  # seconds, the script's --max-seconds; pytest's timeout leaves room for its set-up
pytestmark = [pytest.mark.reliability, pytest.mark.timeout(BUDGET + 120)]


def test_database_faults_give_the_contract_s_exit_codes_and_lose_nothing(short_run_results):
    # One round holds SQLite's write lock past busy_timeout (30 s): the retry of SQLITE_BUSY is seen.
    assert db_faults.main(["--rounds", "1", "--max-seconds", str(BUDGET), "--seed", "5", "--long-holds", "1"]) == 0
    ledgers = json.loads((short_run_results / "db_faults.json").read_text())["ledgers"]
    expected = {(name, backend) for backend in ("postgres", "mariadb") for name in db_faults.PRIVATE + db_faults.SHARED}
    expected.add(("SQLite write lock held by another process", "sqlite"))
    assert {(lg["scenario"], lg["backend"]) for lg in ledgers} == expected
    assert len(ledgers) == 19
    assert all(lg["rounds"] == 1 and lg["violations"] == 0 and lg["checks"] > 0 for lg in ledgers)
