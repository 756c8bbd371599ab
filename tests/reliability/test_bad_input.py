"""reliability/bad_input.py, short: the whole table of malformed input on every database, and random values."""

from __future__ import annotations

import json

import bad_input
import pytest

BUDGET = 240  # seconds, the script's --max-seconds; pytest's timeout leaves room for its set-up
pytestmark = [pytest.mark.reliability, pytest.mark.timeout(BUDGET + 120)]


def test_every_malformed_input_gets_one_line_its_exit_code_and_touches_nothing(short_run_results):
    assert bad_input.main(["--rounds", "10", "--max-seconds", str(BUDGET), "--seed", "3"]) == 0
    ledgers = json.loads((short_run_results / "bad_input.json").read_text())["ledgers"]
    tables = [lg for lg in ledgers if lg["scenario"].startswith("table")]
    assert {lg["backend"] for lg in tables} == {"sqlite", "postgres", "mariadb"}
    assert all(lg["rounds"] == len(bad_input.CASES) >= 40 for lg in tables)
    assert all(lg["violations"] == 0 and lg["checks"] > 0 for lg in ledgers)
