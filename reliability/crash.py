"""Crash at any point: refresh-token-cleanup and email-queue killed with SIGKILL at random moments.

On each database, with its default lock (file, advisory lock, GET_LOCK) and with the lease (TTL 2 s,
the smallest allowed, renewed every second; the work per round grows until a run takes about
2.5 s, so many kills come after a renewal), a run is started, frozen with SIGSTOP at a random
moment (a uniform delay over the run's length; one round in four aims at the end of the work, the
stretch between the last batch and the record), classified by where it is (before the lock, lock
held but run not recorded, inside a batch, between batches, after the last batch before the
record, after the record; for email-queue the batches are told apart by whether the server had
accepted emails not yet recorded as sent; for the lease: renewed or not, a renewal statement in
flight), then killed with SIGKILL. Each kill is a fault counted under its moment. The default 50 rounds per
lock make 100 kills per job per database. Invariants after each kill (reliability/_workloads.py
says how batches are made observable):
- tokens: no token that had not expired (or had expired within the retention) is gone; the expired
  tokens gone are the first in the job's deletion order ((expires_at, id), or storage order), on
  rounds whose expired tokens come in groups of one expiry and on rounds where all share one;
- emails: no row is gone, each is pending, sending, sent or failed; no row is marked sent that the
  server did not accept; an email accepted twice must have been accepted, and not yet recorded as
  sent, when its sender was killed (the only window for a duplicate): such duplicates are counted;
- the lock is free within its backend's bound (README "Locks"): an invocation started after the
  kill (lease: after the lease's remaining TTL, read from the database at the kill) must get it;
- the killed run, if it had recorded itself as running, ends `abandoned`; the invocation that gets
  the lock succeeds and completes the work: no expired token left; every email sent, the rows the
  dead sender held once the visibility timeout (10 s, the smallest allowed) has passed: every
  follow-up must have reclaimed the rows claimed more than that before it started, and at the end
  of each scenario the script waits the timeout out and requires every email sent;
- no secret marker in any output or in the database.
"""

from __future__ import annotations

import random
import signal
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    Budget,
    Report,
    Workspace,
    add_emails,
    arguments,
    check_database_secrets,
    check_invocation_secrets,
    email_states,
    fresh_database,
    preload,
    seed_from,
    selected_backends,
    smtp_sink,
)
from _workloads import (
    BATCH,
    EMAILS,
    TOKENS,
    VISIBILITY,
    Inspector,
    Mailbox,
    add_plan_arguments,
    add_tokens,
    check_tokens,
    delete_kept,
    email_claims,
    email_config,
    email_moment,
    follow_up,
    frozen_run,
    lease_figures,
    most,
    pad_sqlite,
    plan,
    run_of,
    tally,
    token_config,
    tokens,
    utcnow,
    warm_up,
)


def kill(inv, ledger, where: str) -> tuple[int, float]:
    """SIGKILL the frozen invocation: (exit code, monotonic time of the kill)."""
    inv.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    code = inv.wait(timeout=60)
    check_invocation_secrets(ledger, inv, "the killed invocation")
    ledger.check(code == -signal.SIGKILL or (code == 0 and where == "after the run was recorded"),
                 f"the killed invocation ended with {code} ({where}): {inv.stderr[-300:]}")
    return code, killed_at


def check_dead_run(ledger, url: str, job: str, moment) -> None:
    """A run killed while it was recorded as running is `abandoned` once another process took the lock."""
    if moment.run is None:
        return
    final = run_of(url, job, moment.run["pid"])
    if moment.run["status"] == "running":
        ledger.check(final is not None and final["status"] == "abandoned",
                     f"the killed run ended {final and final['status']}, not abandoned ({moment.where})")
    else:
        ledger.check(final is not None and final["status"] == moment.run["status"],
                     f"a run killed after its record changed from {moment.run['status']} to {final and final['status']}")


# ---------------------------------------------------------------- refresh-token-cleanup

def token_round(ws: Workspace, insp: Inspector, ledger, rng: random.Random, round_no: int, span: float,
                lock: str, groups: int, expiry_only: bool) -> None:
    url = ws.db_url
    add_tokens(url, rng, f"r{round_no}", groups, tied=round_no % 2 == 1)  # odd rounds: one expiry for all
    before = tokens(url)
    total = groups * BATCH
    inv, moment, left = frozen_run(ws, insp, rng, TOKENS, round_no, span, total)
    ledger.fault(f"SIGKILL {moment.where}")
    lease_figures(ledger, lock, moment, "kills")
    code, killed_at = kill(inv, ledger, moment.where)
    order = check_tokens(ledger, before, tokens(url), "after the kill", expiry_only)
    if order in ("expiry", "storage"):
        name = f"partial deletions seen as a prefix ({order} order)"
        tally(ledger, name)
    free_from = killed_at + (moment.lease_left if lock == "lease" else 0.0)
    follow, report, _ = follow_up(ws, TOKENS, ledger, free_from)
    most(ledger, "longest wait for the lock after a kill s", follow.started - killed_at)
    ledger.check(report.get("status") == "succeeded", f"the follow-up ended {report.get('status')}: "
                                                      f"{follow.stderr[-300:]}")
    check_dead_run(ledger, url, TOKENS, moment)
    final = tokens(url)
    check_tokens(ledger, before, final, "after the follow-up", expiry_only)
    ledger.check(not any(t.group is not None for t in final.values()), "expired tokens left after the follow-up")
    delete_kept(url)


def tokens_scenario(report: Report, backend: str, lock: str, rounds: int, seconds: float,
                    rng: random.Random, lease_run: float) -> None:
    budget = Budget(rounds, seconds)
    with report.scenario(f"SIGKILL refresh-token-cleanup, lock {lock}", backend, budget) as ledger, \
            tempfile.TemporaryDirectory(prefix="cw-crash-") as tmp, fresh_database(backend, Path(tmp)) as url:
        ws = Workspace(Path(tmp) / "ws", url).prepare(token_config(lock))
        if backend == "sqlite" and lock != "lease":
            pad_sqlite(url)  # the expiry order on SQLite; the lease's scenario, with more rows, sees the rowid sweep
        groups, span = warm_up(ws, TOKENS, lock, rng, lease_run)
        ledger.figure("expired tokens per round", groups * BATCH)
        ledger.figure("run s", round(span, 2))
        insp = Inspector(backend, ws, TOKENS, lock)
        for round_no in budget:
            token_round(ws, insp, ledger, rng, round_no, span, lock, groups, expiry_only=backend == "mariadb")
            ledger.rounds = round_no + 1
        check_database_secrets(ledger, url)


# ---------------------------------------------------------------- email-queue

def email_round(ws: Workspace, insp: Inspector, ledger, rng: random.Random, round_no: int, span: float,
                lock: str, n: int, mailbox: Mailbox, stats: dict) -> None:
    url = ws.db_url
    first_id = max(email_states(url), default=0) + 1
    add_emails(url, n, f"round {round_no}")
    expected = set(email_states(url))
    inv, moment, _ = frozen_run(ws, insp, rng, EMAILS, round_no, span, n, first_id)
    where = email_moment(moment, url, mailbox, inv.pid)
    ledger.fault(f"SIGKILL {where}")
    lease_figures(ledger, lock, moment, "kills")
    code, killed_at = kill(inv, ledger, moment.where)
    stats["accepted, not recorded at a kill"] += mailbox.after_kill()
    stats["left sending by a kill"] += sum(1 for s, by, _ in email_claims(url).values()
                                           if s == "sending" and by and by.endswith(f":{inv.pid}"))
    mailbox.check(ledger, expected, "after the kill")
    free_from = killed_at + (moment.lease_left if lock == "lease" else 0.0)
    since = utcnow()
    follow, report, _ = follow_up(ws, EMAILS, ledger, free_from)
    most(ledger, "longest wait for the lock after a kill s", follow.started - killed_at)
    ledger.check(report.get("status") == "succeeded", f"the follow-up ended {report.get('status')}: "
                                                      f"{follow.stderr[-300:]}")
    stats["reclaimed by a later run"] += int(report.get("counts", {}).get("reclaimed", 0))
    check_dead_run(ledger, url, EMAILS, moment)
    mailbox.check(ledger, expected, "after the follow-up")
    mailbox.check_no_stale_claims(ledger, since, "after the follow-up")
    waiting = [i for i, (s, _) in email_states(url).items() if s in ("pending", "failed")]
    ledger.check(not waiting, f"{len(waiting)} emails pending or failed after the follow-up: {waiting[:5]}")


def drain(ws: Workspace, ledger, mailbox: Mailbox, stats: dict) -> None:
    """Wait the visibility timeout out for the rows dead senders left, then one run must send them all."""
    claimed = [at for s, _, at in email_claims(ws.db_url).values() if s == "sending" and at is not None]
    if claimed:
        time.sleep(max(0.0, (max(claimed) - utcnow()).total_seconds() + VISIBILITY + 0.5))
    since = utcnow()
    follow, report, _ = follow_up(ws, EMAILS, ledger, time.monotonic())
    ledger.check(report.get("status") == "succeeded", f"the last run ended {report.get('status')}")
    stats["reclaimed by a later run"] += int(report.get("counts", {}).get("reclaimed", 0))
    mailbox.check_no_stale_claims(ledger, since, "at the end")
    states = email_states(ws.db_url)
    unsent = [i for i, (s, _) in states.items() if s != "sent"]
    ledger.check(not unsent, f"{len(unsent)} emails not sent at the end: {unsent[:5]}")
    mailbox.check(ledger, set(states), "at the end")
    ledger.figure("emails", len(states))


def emails_scenario(report: Report, backend: str, lock: str, rounds: int, seconds: float,
                    rng: random.Random, lease_run: float) -> None:
    budget = Budget(rounds, max(1.0, seconds - VISIBILITY - 5))  # the end waits out the visibility timeout
    with report.scenario(f"SIGKILL email-queue, lock {lock}", backend, budget) as ledger, \
            tempfile.TemporaryDirectory(prefix="cw-crash-mail-") as tmp, fresh_database(backend, Path(tmp)) as url, \
            smtp_sink(Path(tmp)) as (port, log):
        ws = Workspace(Path(tmp) / "ws", url).prepare(email_config(lock, port))
        n, span = warm_up(ws, EMAILS, lock, rng, lease_run)
        ledger.figure("emails per round", n)
        ledger.figure("run s", round(span, 2))
        insp = Inspector(backend, ws, EMAILS, lock)
        mailbox = Mailbox(url, log)
        stats = {"accepted, not recorded at a kill": 0, "left sending by a kill": 0, "reclaimed by a later run": 0}
        for round_no in budget:
            email_round(ws, insp, ledger, rng, round_no, span, lock, n, mailbox, stats)
            ledger.rounds = round_no + 1
        drain(ws, ledger, mailbox, stats)
        for name, value in stats.items():
            ledger.figure(name, value)
        check_database_secrets(ledger, url)


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__.splitlines()[0], rounds=50, seconds=1800)
    add_plan_arguments(parser)
    args = parser.parse_args(argv)
    rng = random.Random(seed_from(args))
    report = Report("crash", "Crash at any point: SIGKILL at random moments of token cleanup and email sending")
    preload()
    scenarios = plan(args, selected_backends(args, report))
    budget = Budget(len(scenarios), args.max_seconds)
    for i, (job, backend, lock) in enumerate(scenarios):
        share = budget.split(len(scenarios) - i)
        scenario = tokens_scenario if job == "tokens" else emails_scenario
        scenario(report, backend, lock, args.rounds, share, rng, args.lease_run)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
