"""Graceful stop: refresh-token-cleanup and email-queue stopped with SIGTERM at random moments.

The same runs as crash.py (reliability/_workloads.py): on each database, with its default lock and
with the lease, a run is frozen with SIGSTOP at a random moment, classified by where it is, sent
SIGTERM and let go (SIGCONT: the signal is handled the moment it runs again). Each stop is a fault
counted under its moment. The default 50 rounds per lock make 100 stops per job per database.
Invariants after each stop:
- the exit code: 143 and the run recorded `interrupted` when the run was recorded as running and
  had more work than the batch in flight (with no more, 0 and `succeeded` too; with the lease, 1
  and `failed` for a lost lease when the lease expired while the run was frozen and looked at);
  0 and `succeeded` when the run had already been recorded (or death by the signal, once the CLI
  had given its handlers back on the way out; the record unchanged); either, when its work was
  done but not yet recorded; before any run was recorded, 143 (or death by the signal, before the
  CLI installed its handlers) and no run, or an `interrupted` one;
- the exit comes within one batch's time: the time from the signal to the exit against the run's
  longest transaction (its --json report) plus `--exit-slack` for recording the run, releasing
  the lock and leaving; the worst of both is reported;
- the lock is free at once: the next invocation gets it (lease included: it is given back);
- nothing partial: the data invariants of crash.py (a prefix of the job's order, no token kept gone, no email
  row gone); and more, since the stop is graceful: no email left `sending` by the stopped run,
  every email the server accepted recorded as sent, so no email is ever sent twice;
- the next invocation succeeds and completes the work; no secret marker in any output or row.
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
    Inspector,
    Mailbox,
    Moment,
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
    report_of,
    run_of,
    tally,
    token_config,
    tokens,
    warm_up,
)


def stop(inv, ledger, insp: Inspector, moment: Moment, slack: float, last_batch: bool) -> int:
    """SIGTERM the frozen invocation, let it go, check its exit code, record and timing; the exit code.
    last_batch: the work left when it was frozen was at most the batch in flight."""
    url, job = insp.url, insp.job
    # A lease is not renewed while its holder is frozen: looking at it may outlast the TTL (2 s).
    lease_gone = insp.lock == "lease" and moment.run is not None and insp.lease()[1] <= 0
    inv.signal(signal.SIGTERM)
    signalled = time.monotonic()
    inv.signal(signal.SIGCONT)
    code = inv.wait(timeout=120)
    to_exit = (inv.ended or time.monotonic()) - signalled
    check_invocation_secrets(ledger, inv, "the stopped invocation")
    run = run_of(url, job, inv.pid)
    status = run["status"] if run else None
    where = moment.where
    if moment.run is None:
        ok = (code == -signal.SIGTERM and run is None) or (code == 143 and status in (None, "interrupted"))
    elif moment.run["status"] != "running":
        # On its way out: once the CLI has given the signal handlers back, the default action ends the
        # process, which changes nothing recorded (as before the handlers were installed).
        ok = code in (0, -signal.SIGTERM) and status == moment.run["status"]
        if code == -signal.SIGTERM:
            tally(ledger, "ended by the signal after the record")
    elif "before the record" in where or last_batch:
        # The batch in flight finishes: when it was the last one, the run may end as having done its work.
        ok = (code, status) in ((0, "succeeded"), (143, "interrupted"))
    else:
        ok = code == 143 and status == "interrupted"
    if not ok and lease_gone and (code, status) == (1, "failed") and "lost the lease" in inv.stderr:
        ok = True  # the run found its lease gone before its next commit, as it must
        tally(ledger, "leases expired while frozen")
    ledger.check(ok, f"SIGTERM {where}: exit {code}, run {status}: {inv.stderr[-300:]}")
    if code == 143 and run is not None:
        batch = float(report_of(inv).get("longest_transaction_seconds") or 0.0)
        most(ledger, "worst signal-to-exit s", to_exit)
        most(ledger, "longest batch of a stopped run s", batch)
        most(ledger, "worst signal-to-exit beyond the longest batch s", to_exit - batch)
        ledger.check(to_exit <= batch + slack, f"exit {to_exit:.2f} s after SIGTERM ({where}), the longest batch "
                                               f"took {batch:.2f} s")
    return code


def free_at_once(ws: Workspace, job: str, ledger) -> dict:
    """The next invocation must get the lock (a stopped run gives it back), succeed, and finish the work."""
    follow, report, _ = follow_up(ws, job, ledger, time.monotonic())
    ledger.check(report.get("status") == "succeeded", f"the follow-up ended {report.get('status')}: "
                                                      f"{follow.stderr[-300:]}")
    return report


# ---------------------------------------------------------------- refresh-token-cleanup

def token_round(ws: Workspace, insp: Inspector, ledger, rng: random.Random, round_no: int, span: float,
                lock: str, groups: int, expiry_only: bool, slack: float) -> None:
    url = ws.db_url
    add_tokens(url, rng, f"r{round_no}", groups, tied=round_no % 2 == 1)  # odd rounds: one expiry for all
    before = tokens(url)
    total = groups * BATCH
    inv, moment, left = frozen_run(ws, insp, rng, TOKENS, round_no, span, total)
    ledger.fault(f"SIGTERM {moment.where}")
    lease_figures(ledger, lock, moment, "stops")
    stop(inv, ledger, insp, moment, slack, last_batch=left <= BATCH)
    order = check_tokens(ledger, before, tokens(url), "after the stop", expiry_only)
    if order in ("expiry", "storage"):
        name = f"partial deletions seen as a prefix ({order} order)"
        tally(ledger, name)
    free_at_once(ws, TOKENS, ledger)
    final = tokens(url)
    check_tokens(ledger, before, final, "after the follow-up", expiry_only)
    ledger.check(not any(t.group is not None for t in final.values()), "expired tokens left after the follow-up")
    delete_kept(url)


def tokens_scenario(report: Report, backend: str, lock: str, rounds: int, seconds: float, rng: random.Random,
                    lease_run: float, slack: float) -> None:
    budget = Budget(rounds, seconds)
    with report.scenario(f"SIGTERM refresh-token-cleanup, lock {lock}", backend, budget) as ledger, \
            tempfile.TemporaryDirectory(prefix="cw-stop-") as tmp, fresh_database(backend, Path(tmp)) as url:
        ws = Workspace(Path(tmp) / "ws", url).prepare(token_config(lock))
        if backend == "sqlite" and lock != "lease":
            pad_sqlite(url)  # the expiry order on SQLite; the lease's scenario, with more rows, sees the rowid sweep
        groups, span = warm_up(ws, TOKENS, lock, rng, lease_run)
        ledger.figure("expired tokens per round", groups * BATCH)
        ledger.figure("run s", round(span, 2))
        insp = Inspector(backend, ws, TOKENS, lock)
        for round_no in budget:
            token_round(ws, insp, ledger, rng, round_no, span, lock, groups, backend == "mariadb", slack)
            ledger.rounds = round_no + 1
        check_database_secrets(ledger, url)


# ---------------------------------------------------------------- email-queue

def email_round(ws: Workspace, insp: Inspector, ledger, rng: random.Random, round_no: int, span: float,
                lock: str, n: int, mailbox: Mailbox, slack: float) -> None:
    url = ws.db_url
    first_id = max(email_states(url), default=0) + 1
    add_emails(url, n, f"round {round_no}")
    expected = set(email_states(url))
    inv, moment, _ = frozen_run(ws, insp, rng, EMAILS, round_no, span, n, first_id)
    ledger.fault(f"SIGTERM {email_moment(moment, url, mailbox, inv.pid)}")
    lease_figures(ledger, lock, moment, "stops")
    # One batch claims every email of the round (batch_size 5000): once claimed, the batch in flight is the last.
    unclaimed = [i for i, (s, _, _) in email_claims(url).items() if i >= first_id and s == "pending"]
    code = stop(inv, ledger, insp, moment, slack, last_batch=not unclaimed)
    mailbox.check(ledger, expected, "after the stop")
    if code in (0, 143):
        held = [i for i, (s, by, _) in email_claims(url).items() if s == "sending" and by and by.endswith(f":{inv.pid}")]
        ledger.check(not held, f"{len(held)} emails left `sending` by a graceful stop: {held[:5]}")
        time.sleep(0.05)
        unrecorded = mailbox.unrecorded()
        ledger.check(not unrecorded, f"{len(unrecorded)} emails the server accepted are not recorded as sent after "
                                     f"a graceful stop (they would be sent twice): {sorted(unrecorded)[:5]}")
    free_at_once(ws, EMAILS, ledger)
    mailbox.check(ledger, expected, "after the follow-up")
    states = email_states(url)
    unsent_ids = [i for i, (s, _) in states.items() if s != "sent"]
    ledger.check(not unsent_ids, f"{len(unsent_ids)} emails not sent after the follow-up: {unsent_ids[:5]}")
    ledger.figure("emails", len(states))


def emails_scenario(report: Report, backend: str, lock: str, rounds: int, seconds: float, rng: random.Random,
                    lease_run: float, slack: float) -> None:
    budget = Budget(rounds, seconds)
    with report.scenario(f"SIGTERM email-queue, lock {lock}", backend, budget) as ledger, \
            tempfile.TemporaryDirectory(prefix="cw-stop-mail-") as tmp, fresh_database(backend, Path(tmp)) as url, \
            smtp_sink(Path(tmp)) as (port, log):
        ws = Workspace(Path(tmp) / "ws", url).prepare(email_config(lock, port))
        n, span = warm_up(ws, EMAILS, lock, rng, lease_run)
        ledger.figure("emails per round", n)
        ledger.figure("run s", round(span, 2))
        insp = Inspector(backend, ws, EMAILS, lock)
        mailbox = Mailbox(url, log)
        for round_no in budget:
            email_round(ws, insp, ledger, rng, round_no, span, lock, n, mailbox, slack)
            ledger.rounds = round_no + 1
        check_database_secrets(ledger, url)


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__.splitlines()[0], rounds=50, seconds=1800)
    add_plan_arguments(parser)
    parser.add_argument("--exit-slack", type=float, default=1.0,
                        help="seconds allowed from SIGTERM to exit beyond the run's longest batch (default 1)")
    args = parser.parse_args(argv)
    rng = random.Random(seed_from(args))
    report = Report("graceful_stop", "Graceful stop: SIGTERM at random moments of token cleanup and email sending")
    preload()
    scenarios = plan(args, selected_backends(args, report))
    budget = Budget(len(scenarios), args.max_seconds)
    for i, (job, backend, lock) in enumerate(scenarios):
        share = budget.split(len(scenarios) - i)
        scenario = tokens_scenario if job == "tokens" else emails_scenario
        scenario(report, backend, lock, args.rounds, share, rng, args.lease_run, args.exit_slack)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
