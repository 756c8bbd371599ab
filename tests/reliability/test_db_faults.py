"""reliability/db_faults.py, short: one round of every database fault on PostgreSQL and MariaDB."""

from __future__ import annotations

import json

import db_faults


def test_database_faults_give_the_contract_s_exit_codes_and_lose_nothing(short_run_results):
    assert db_faults.main(["--rounds", "1", "--max-seconds", "400", "--seed", "5"]) == 0
    ledgers = json.loads((short_run_results / "db_faults.json").read_text())["ledgers"]
    assert {(lg["backend"], lg["rounds"]) for lg in ledgers} == {("postgres", 1), ("mariadb", 1)}
    assert len(ledgers) == 14
    assert all(lg["violations"] == 0 and lg["checks"] > 0 for lg in ledgers)
