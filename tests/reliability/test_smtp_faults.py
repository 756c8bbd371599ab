"""reliability/smtp_faults.py, short: a few hundred emails per database through a misbehaving server."""

from __future__ import annotations

import json

import pytest
import smtp_faults

BUDGET = 200  # seconds, the script's --max-seconds; pytest's timeout leaves room for its set-up
pytestmark = [pytest.mark.reliability, pytest.mark.timeout(BUDGET + 120)]


def test_random_smtp_replies_and_kills_lose_no_email_and_explain_every_duplicate(short_run_results):
    assert smtp_faults.main(["--rounds", "200", "--max-seconds", str(BUDGET), "--seed", "11"]) == 0
    ledgers = json.loads((short_run_results / "smtp_faults.json").read_text())["ledgers"]
    assert {lg["backend"] for lg in ledgers} == {"sqlite", "postgres", "mariadb"}
    for lg in ledgers:
        assert lg["violations"] == 0 and lg["checks"] > 0
        assert lg["figures"]["sent"] + lg["figures"]["failed"] == 200
