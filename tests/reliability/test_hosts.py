"""reliability/hosts.py, short: three hosts in real network namespaces, one vanishing mid-batch."""

from __future__ import annotations

import json

import hostnet
import hosts
import pytest

from tests.conftest import CI

BOUND = 8  # [locks] host_loss_bound for this run, in seconds (the smallest it takes)
BUDGET = 100  # seconds, the script's --max-seconds; pytest's timeout leaves room for its set-up
pytestmark = [pytest.mark.reliability, pytest.mark.timeout(BUDGET + 120)]


@pytest.fixture(autouse=True)
def namespaces_possible() -> None:
    why = hostnet.unavailable()
    if why and CI:
        raise RuntimeError(f"the hosts test must run under CI=true: {why}")
    if why:
        pytest.skip(why)


def _ledgers(folder) -> dict[tuple[str, str], dict]:
    found = json.loads((folder / "hosts.json").read_text())["ledgers"]
    return {(lg["scenario"], lg["backend"]): lg for lg in found}


def test_hosts_that_vanish_lose_the_job_to_another_host_within_the_bound(short_run_results):
    code = hosts.main(["--rounds", "2", "--max-seconds", str(BUDGET), "--seed", "12", "--bound", str(BOUND),
                       "--retry-time", "2", "--cuts", "1", "--skew-backends", "postgres"])
    ledgers = _ledgers(short_run_results)
    broken = {key: lg["messages"] for key, lg in ledgers.items() if lg["violations"]}
    assert code == 0 and not broken, broken
    for database, lock in hosts.COMBOS:
        assert ledgers[(f"3 hosts x {hosts.PER_HOST} invocations per window, lock {lock}", database)]["rounds"] == 2
        cut = ledgers[(f"holder cut off mid-batch, lock {lock}", database)]["figures"]
        assert cut["taker done s after the cut (worst)"] <= BOUND + hosts.SLACK
        assert cut["holder exit codes"] in ("75", "1")
        assert cut["holder exited s after the cut (worst)"] <= BOUND + hosts.SLACK
    for database in ("postgres", "mariadb"):
        assert ledgers[("host with no route to the database", database)]["figures"]["attempts"] >= 2
    assert ledgers[("clock skew +-10 min, lock lease", "postgres")]["rounds"] == 2
