"""Mutual exclusion: 16 simultaneous invocations of a due job, round after round, per lock backend.

For each lock backend (file lock on SQLite, PostgreSQL advisory lock, MariaDB GET_LOCK, and the lease
row on each of the three databases), every round opens a new due window and starts 16 invocations of
`test-sleeper` (a job that records its entry, each batch and its exit in a side table, holding its
transaction open for a while in each batch) within a few milliseconds. Invariants per round:

- never two inside at once: the side table shows exactly one enter ... exit sequence, of one pid;
- exactly one run per due window: one new history row, `succeeded`;
- every loser exits 0, reporting `locked` (or `not_due` if it started after the winner finished);
- no loser waits for the winner: every `locked` loser has exited before the winner exits;
- no secret marker in any invocation's output, nor in the database at the end.

Most rounds fork the 16 invocations from this preloaded process; every tenth round starts them as
real `python -m cli` processes, as cron does.
"""

from __future__ import annotations

import json
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from _common import (
    Budget,
    Report,
    Workspace,
    arguments,
    check_database_secrets,
    check_invocation_secrets,
    checker_engine,
    fork,
    fresh_database,
    preload,
    seed_from,
    selected_backends,
    spawn,
    wait_all,
)

COMBOS = (("sqlite", "file"), ("postgres", "postgres"), ("mariadb", "mysql"),
          ("sqlite", "lease"), ("postgres", "lease"), ("mariadb", "lease"))
PROCESSES = 16
SPAWN_EVERY = 10  # every tenth round uses real `python -m cli` processes
JOB = "test-sleeper"
CONFIG = """
[locks]
backend = "{backend}"
lease_ttl = "10s"

[jobs.test-sleeper]
interval = "1h"
batches = 2
batch_seconds = {hold}
"""


def open_due_window(url: str) -> None:
    """Move the last success one period back: the job owes exactly one run again."""
    from sqlalchemy import select, update

    from jobs.models import executions

    eng = checker_engine(url)
    with eng.begin() as conn:
        mine = executions.c.job_name == JOB
        slot = conn.execute(select(executions.c.schedule_slot_at).where(mine)).scalar()
        conn.execute(update(executions).where(mine).values(schedule_slot_at=slot - timedelta(hours=1)))
    eng.dispose()


def new_rows(url: str, after_run: int, after_effect: int) -> tuple[list[dict], list[dict]]:
    """History rows and side-table rows written since the given ids."""
    from sqlalchemy import MetaData, Table, select

    from jobs.models import runs

    eng = checker_engine(url)
    side = Table("side_effects", MetaData(), autoload_with=eng)
    with eng.connect() as conn:
        history = [dict(r) for r in conn.execute(select(runs).where(runs.c.id > after_run)
                                                 .order_by(runs.c.id)).mappings()]
        effects = [dict(r) for r in conn.execute(select(side).where(side.c.id > after_effect)
                                                 .order_by(side.c.id)).mappings()]
    eng.dispose()
    return history, effects


RELEASE_SLACK = timedelta(milliseconds=500)  # the winner releases the lock just after recording its end


def decided_at(inv) -> datetime | None:
    """When a loser found the lock taken: the timestamp of its "skipped" log line (naive UTC)."""
    for line in inv.stderr.splitlines():
        if "skipped" in line:
            return datetime.strptime(line.split()[0], "%Y-%m-%dT%H:%M:%S.%fZ")
    return None


def one_round(ws: Workspace, ledger, round_no: int, marks: list[int]) -> None:
    real = round_no % SPAWN_EVERY == SPAWN_EVERY - 1
    start = spawn if real else fork
    if round_no:
        open_due_window(ws.db_url)
    invocations = [start(ws, JOB, "--json") for _ in range(PROCESSES)]
    codes = wait_all(invocations, timeout=180)
    ledger.fault("spawned processes" if real else "forked processes", PROCESSES)
    ledger.check(codes == [0] * PROCESSES, f"exit codes {codes}")
    reports = {}
    for inv in invocations:
        check_invocation_secrets(ledger, inv)
        try:
            reports[inv.pid] = json.loads(inv.stdout)["status"]
        except (ValueError, KeyError):
            ledger.check(False, f"pid {inv.pid} printed no JSON report: {inv.stdout[:200]!r} {inv.stderr[-300:]!r}")
    history, effects = new_rows(ws.db_url, *marks)
    if history:
        marks[0] = history[-1]["id"]
    if effects:
        marks[1] = effects[-1]["id"]
    ledger.check(len(history) == 1 and history[0]["status"] == "succeeded",
                 f"one run per due window: history {[(h['id'], h['status'], h['pid']) for h in history]}")
    events = [(e["event"], e["pid"]) for e in effects]
    enters = [pid for event, pid in events if event == "enter"]
    ledger.check(len(enters) == 1 and events[0] == ("enter", enters[0]) and events[-1] == ("exit", enters[0])
                 and all(pid == enters[0] for _, pid in events),
                 f"never two inside at once: side effects {events}")
    winner = next((inv for inv in invocations if enters and inv.pid == enters[0]), None)
    statuses = sorted(reports.values())
    ledger.check(statuses.count("succeeded") == 1 and set(statuses) <= {"succeeded", "locked", "not_due"},
                 f"statuses {statuses}")
    if winner is None or winner.ended is None:
        ledger.check(False, "no winner found among the invocations")
        return
    losers = [inv for inv in invocations if reports.get(inv.pid) == "locked"]
    for status in ("locked", "not_due"):
        ledger.figures[f"{status} losers"] = ledger.figures.get(f"{status} losers", 0) + statuses.count(status)
    # A loser decides when it finds the lock taken (its "skipped" log line); deciding after the winner's
    # run had ended and released the lock would mean it waited for it. Exit times alone would also count
    # a loser that merely started late on a busy machine.
    finished = history[0]["finished_at"].replace(tzinfo=None) if history else None
    late = [inv.pid for inv in losers
            if finished is None or (decided_at(inv) or finished + RELEASE_SLACK) > finished + RELEASE_SLACK]
    ledger.check(not late, f"losers {late} decided after the winner had released the lock: they waited for it")
    if losers:
        worst = max(inv.ended - inv.started for inv in losers)
        ledger.figures["slowest loser s"] = round(max(ledger.figures.get("slowest loser s", 0.0), worst), 3)
    ledger.figures["winner held s (max)"] = round(max(ledger.figures.get("winner held s (max)", 0.0),
                                                      winner.ended - winner.started), 3)


def scenario(report: Report, database: str, lock: str, rounds: int, seconds: float, hold: float) -> None:
    budget = Budget(rounds, seconds)
    with report.scenario(f"{PROCESSES} at once, lock {lock}", database, budget) as ledger, \
            tempfile.TemporaryDirectory(prefix="cw-mutex-") as tmp, fresh_database(database, Path(tmp)) as url:
        ws = Workspace(Path(tmp) / "ws", url).prepare(CONFIG.format(backend=lock, hold=hold))
        marks = [0, 0]
        for round_no in budget:
            one_round(ws, ledger, round_no, marks)
            ledger.rounds = round_no + 1
        check_database_secrets(ledger, url)


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__.splitlines()[0], rounds=200, seconds=3600)
    parser.add_argument("--locks", default=",".join(lock for _, lock in COMBOS),
                        help="lock backends to try (file, postgres, mysql, lease)")
    parser.add_argument("--hold", type=float, default=1.0, help="seconds the winner holds each of its 2 batches")
    args = parser.parse_args(argv)
    seed_from(args)
    report = Report("mutual_exclusion", "Mutual exclusion: 16 simultaneous invocations per due window")
    preload()
    databases = selected_backends(args, report)
    locks = {lock.strip() for lock in args.locks.split(",")}
    combos = [(db, lock) for db, lock in COMBOS if db in databases and lock in locks]
    budget = Budget(len(combos), args.max_seconds)
    for i, (database, lock) in enumerate(combos):
        scenario(report, database, lock, args.rounds, budget.split(len(combos) - i), args.hold)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
