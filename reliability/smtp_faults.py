"""Mail server faults: thousands of emails through an SMTP server that answers at random, plus kills.

The local server (reliability/smtp_sink.py, its own process, requiring AUTH with the SMTP password
marker) answers each message with 250 (accepted), 421 (closing, then hangs up), 451 (try later), 550
(mailbox unavailable), or cuts the connection after the data either without taking the message
("drop") or after taking it ("lost": the client sees a failure for a message the server has). Rounds of
`email-queue --force` run until no email is pending or sending; some are SIGKILLed at a random moment.
Rows left `sending` by a killed sender have their claims aged past the visibility timeout (instead of
waiting ten minutes) so the next run reclaims them. Invariants at the end:

- no email lost: every row is still there, `sent` or `failed`;
- every `sent` row was accepted by the server at least once;
- every `failed` row carries the server's reason (a 550 reply, or the last transient reason once its
  attempts were spent), and every email the server refused with 550 and never took is `failed`;
- an email taken more than once is a duplicate: each is explained by a sender killed between the
  server's acceptance and the commit, or by a connection cut after the server took the message;
  both are counted, and no other duplicate may exist;
- the SMTP password appears in no output (text logs, JSON logs, --json), no row and no metrics.
"""

from __future__ import annotations

import json
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    SECRETS,
    Budget,
    Report,
    Workspace,
    add_emails,
    age_claims,
    arguments,
    check_database_secrets,
    check_invocation_secrets,
    email_states,
    fork,
    fresh_database,
    preload,
    seed_from,
    selected_backends,
    smtp_cut,
    smtp_log,
    smtp_sink,
)

FAULTS = "250:70,451:10,421:4,550:6,drop:5,lost:5"
CONFIG = """
[jobs.email-queue]
batch_size = 500
smtp_host = "127.0.0.1"
smtp_port = {port}
smtp_username = "cronwarden"
smtp_timeout = "2s"
visibility_timeout = "20s"
retry_base = "1s"
retry_max = "1s"
max_attempts = 6
"""


def scenario(report: Report, database: str, emails: int, seconds: float, rng: random.Random, seed: int) -> None:
    budget = Budget(10_000, seconds)
    with report.scenario(f"{emails} emails, random replies and kills", database, budget) as ledger, \
            tempfile.TemporaryDirectory(prefix="cw-smtp-") as tmp, fresh_database(database, Path(tmp)) as url, \
            smtp_sink(Path(tmp), FAULTS, seed, password=SECRETS["smtp"]) as (port, log):
        ws = Workspace(Path(tmp) / "ws", url).prepare(CONFIG.format(port=port))
        env = ws.env(CRONWARDEN_SMTP_PASSWORD=SECRETS["smtp"])
        add_emails(url, emails, "faults")
        killed: set[int] = set()
        reported = {"sent": 0, "failed": 0}
        for round_no in budget:
            states = email_states(url)
            if all(status in ("sent", "failed") for status, _ in states.values()):
                break
            age_claims(url)
            fmt = ["--log-format", "json"] if round_no % 2 else []
            inv = fork(ws, *fmt, "email-queue", "--force", "--json", env=env)
            if rng.random() < 0.25:
                time.sleep(rng.uniform(0.05, 1.5))
                inv.signal(signal.SIGKILL)
                code = inv.wait(timeout=300)
                if code == -signal.SIGKILL:
                    ledger.fault("sender SIGKILLed")
                    killed.update(i for i, (status, _) in email_states(url).items() if status == "sending")
            else:
                code = inv.wait(timeout=300)
                try:
                    counts = json.loads(inv.stdout)["counts"]
                    for key in reported:
                        reported[key] += counts.get(key, 0)
                except (ValueError, KeyError):
                    ledger.check(False, f"no JSON report: exit {code}: {inv.stderr[-300:]}")
                ledger.check(code in (0, 75), f"email-queue exited {code}: {inv.stderr[-300:]}")
            check_invocation_secrets(ledger, inv)
            time.sleep(0.2)  # let the per-row backoff (1 s) of some rows pass between runs
        metrics = fork(ws, "metrics", env=env)
        metrics.wait(timeout=120)
        check_invocation_secrets(ledger, metrics, "cronwarden metrics")
        states = email_states(url)
        accepted, rejected = smtp_log(log)
        ledger.check(len(states) == emails, f"{emails - len(states)} email rows disappeared")
        unfinished = [i for i, (status, _) in states.items() if status not in ("sent", "failed")]
        ledger.check(all(states[i][0] in ("pending", "sending") for i in unfinished), "an email in an unknown state")
        # Stopped by its time budget, the queue is not drained yet: what is left must be waiting, not lost.
        ledger.check(budget.stopped_by_time or not unfinished, f"{len(unfinished)} emails neither sent nor failed")
        ledger.figures["left waiting when time ran out"] = len(unfinished)
        sent = [i for i, (status, _) in states.items() if status == "sent"]
        failed = {i: err for i, (status, err) in states.items() if status == "failed"}
        ledger.check(all(accepted.get(i, 0) >= 1 for i in sent),
                     f"sent but never accepted: {[i for i in sent if not accepted.get(i)][:10]}")
        ledger.check(all(err for err in failed.values()), "a failed email without its reason")
        refused_only = [i for i in rejected if not accepted.get(i)]
        ledger.check(all(i in failed for i in refused_only),
                     f"refused with 550, never taken, yet not failed: {[i for i in refused_only if i not in failed][:10]}")
        ledger.check(all("550" in failed[i] for i in refused_only if i in failed and rejected.get(i)),
                     "a 550 failure without the server's reply")
        duplicates = [i for i, n in accepted.items() if n > 1]
        cut = smtp_cut(log)
        for _ in duplicates:
            ledger.fault("duplicate delivery")
        unexplained = [i for i in duplicates if i not in killed and i not in cut]
        ledger.check(not unexplained, f"duplicates neither after a kill nor after a cut: {unexplained[:10]}")
        ledger.figures.update({
            "emails": emails, "sent": len(sent), "failed": len(failed),
            "failed with 550": sum("550" in (err or "") for err in failed.values()),
            "duplicates": len(duplicates),
            "duplicates after a kill": sum(i in killed for i in duplicates),
            "duplicates after a cut": sum(1 for i in duplicates if i in cut and i not in killed),
            "sent/failed reported by --json": f"{reported['sent']}/{reported['failed']}",
            "runs": budget.done,
        })
        lost_sends = {i for i, n in accepted.items() if n >= 1} - set(sent)
        lost_sends -= set(failed) | set(unfinished)  # a waiting row is resent; its duplicate is counted then
        ledger.check(not lost_sends, f"taken by the server but neither sent nor failed: {sorted(lost_sends)[:10]}")
        ledger.rounds = budget.done
        check_database_secrets(ledger, url)


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__.splitlines()[0], rounds=10_000, seconds=1800)
    args = parser.parse_args(argv)
    seed = seed_from(args)
    rng = random.Random(seed)
    report = Report("smtp_faults", f"Mail server faults: {args.rounds} emails per database, replies {FAULTS}")
    preload()
    databases = selected_backends(args, report)
    total = Budget(len(databases), args.max_seconds)
    for i, database in enumerate(databases):
        scenario(report, database, args.rounds, total.split(len(databases) - i), rng, seed)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
