"""Crash and stop at any point: SIGKILL and SIGTERM at random moments of real runs.

refresh-token-cleanup (on each database, with its default lock and with the lease lock) and
email-queue (on each database, sending to a local SMTP server) are started, then killed with
SIGKILL, or stopped with SIGTERM, after a random delay covering the whole run: before the lock,
inside a batch, between batches and the record, while a lease is being renewed (the lease TTL is
2 s, so runs renew it every second). Each kill is classified by what the database shows of it.

After a SIGKILL:
- tokens: no token that had not expired is gone; the deleted ones are a prefix of the job's
  deletion order (by id, or by expiry), i.e. only whole batches went;
- emails: no row is lost (none deleted, each pending, sending, sent or failed);
- the lock is free within its backend's bound (0 s for file, advisory and GET_LOCK locks; one lease
  TTL for the lease), measured by invoking the job again until it is not `locked`;
- the killed run, if it had started, ends `abandoned`; the next invocation completes the work: no
  expired token left; every email sent (rows left in `sending` are reclaimed once their claim is
  older than the visibility timeout: the script ages the claims instead of waiting ten minutes);
  emails the server accepted twice are counted as duplicates (allowed only for a killed sender).
After a SIGTERM:
- exit 143 (or 0 when the run had already finished; or death by the signal itself when it came
  before the CLI installed its handlers, with no run started), within one batch's time plus the
  process's shutdown: the worst signal-to-exit time is reported;
- the run is recorded `interrupted`, the lock is free at once, and the data invariants above hold.
"""

from __future__ import annotations

import json
import random
import signal
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from _common import (Budget, Report, Workspace, add_emails, age_claims, arguments, check_database_secrets,
                     check_invocation_secrets, checker_engine, email_states, fork, fresh_database, preload,
                     seed_from, selected_backends, smtp_log, smtp_sink, spawn)

DEFAULT_LOCK = {"sqlite": "file", "postgres": "postgres", "mariadb": "mysql"}
TOKENS_EXPIRED, TOKENS_FRESH = 1500, 300
EMAILS = 150
TOKEN_CONFIG = """
[locks]
backend = "{lock}"
lease_ttl = "2s"

[jobs.refresh-token-cleanup]
batch_size = 40
"""
EMAIL_CONFIG = """
[jobs.email-queue]
batch_size = 1000
smtp_host = "127.0.0.1"
smtp_port = {port}
smtp_timeout = "2s"
visibility_timeout = "20s"
retry_base = "1s"
max_attempts = 20
"""


# ---------------------------------------------------------------- looking at the database

def history(url: str) -> list[dict]:
    from sqlalchemy import select

    from jobs.models import runs

    eng = checker_engine(url)
    with eng.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(runs).order_by(runs.c.id)).mappings()]
    eng.dispose()
    return rows


def add_tokens(url: str, tag: str) -> None:
    """Expired tokens whose expiry order differs from their id order, and fresh ones among them."""
    from sqlalchemy import MetaData, Table, insert

    eng = checker_engine(url)
    table = Table("refresh_tokens", MetaData(), autoload_with=eng)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    n = TOKENS_EXPIRED + TOKENS_FRESH
    rows = []
    for i in range(n):
        rank = (i * 7919) % n
        fresh = rank % 6 == 5 and len([r for r in rows if r["token_hash"].startswith("fresh")]) < TOKENS_FRESH
        expires = now + timedelta(days=30, seconds=rank) if fresh else now - timedelta(days=30, seconds=-rank)
        rows.append({"user_id": 1, "token_hash": f"{'fresh' if fresh else 'old'}-{tag}-{i}",
                     "expires_at": expires, "created_at": now - timedelta(days=60)})
    with eng.begin() as conn:
        conn.execute(insert(table), rows)
    eng.dispose()


def tokens(url: str) -> list[tuple[int, str, datetime]]:
    from sqlalchemy import MetaData, Table, select

    eng = checker_engine(url)
    table = Table("refresh_tokens", MetaData(), autoload_with=eng)
    with eng.connect() as conn:
        rows = [tuple(r) for r in conn.execute(select(table.c.id, table.c.token_hash, table.c.expires_at))]
    eng.dispose()
    return rows  # type: ignore[return-value]


def check_tokens(ledger, before: list, after: list, what: str) -> int:  # noqa: ANN001
    """No fresh token gone; the deleted expired tokens are a prefix by id or by expiry. Returns #deleted."""
    left = {row[0] for row in after}
    expired = [row for row in before if row[1].startswith("old")]
    ledger.check(all(row[0] in left for row in before if row[1].startswith("fresh")),
                 f"{what}: a token that had not expired is gone")
    deleted = {row[0] for row in expired if row[0] not in left}
    by_id = [row[0] for row in sorted(expired)]
    by_expiry = [row[0] for row in sorted(expired, key=lambda r: (r[2], r[0]))]
    prefix = any(set(order[:len(deleted)]) == deleted for order in (by_id, by_expiry))
    ledger.check(prefix, f"{what}: the {len(deleted)} deleted tokens are not a prefix of a deletion order "
                         "(a partial batch?)")
    return len(deleted)


def moment(url: str, runs_before: int, deleted: int, total: int, elapsed: float, lease: bool) -> str:
    """Where a kill landed, from what the database shows."""
    rows = history(url)[runs_before:]
    if not rows:
        return "before the run started"
    if rows[0]["status"] == "succeeded":
        return "after the run ended"
    if deleted == 0:
        return "run started, before the first batch"
    if deleted >= total:
        return "after the last batch, before the record"
    return "between or inside batches" + (", lease renewed" if lease and elapsed > 1.0 else "")


def lock_free_after(ws: Workspace, job: str, ledger, bound: float) -> float:  # noqa: ANN001
    """Invoke the job until it is not `locked`; the seconds that took (it must be within `bound`)."""
    start = time.monotonic()
    while True:
        inv = fork(ws, job, "--force", "--json")
        inv.wait(timeout=300)
        check_invocation_secrets(ledger, inv)
        status = json.loads(inv.stdout or "{}").get("status")
        if status != "locked":
            waited = max(0.0, inv.started - start)  # until the invocation that got the lock began
            ledger.check(waited <= bound + 1.5, f"the lock stayed taken {waited:.1f} s (bound {bound} s)")
            ledger.check(status == "succeeded", f"the follow-up run ended {status}: {inv.stderr[-300:]}")
            return waited
        if time.monotonic() - start > bound + 30:
            ledger.check(False, f"the lock was still taken {time.monotonic() - start:.0f} s after the kill")
            return time.monotonic() - start
        time.sleep(0.1)


# ---------------------------------------------------------------- scenarios

def token_round(ws: Workspace, ledger, rng: random.Random, round_no: int, sig: int, lease: bool,  # noqa: ANN001
                span: float) -> None:
    add_tokens(ws.db_url, f"r{round_no}")
    before = tokens(ws.db_url)
    runs_before = len(history(ws.db_url))
    start = spawn if round_no % 10 == 9 else fork
    inv = start(ws, "refresh-token-cleanup", "--force")
    delay = rng.uniform(0, span * (2.5 if start is spawn else 1.0))
    time.sleep(delay)
    signalled = time.monotonic()
    inv.signal(sig)
    code = inv.wait(timeout=120)
    to_exit = time.monotonic() - signalled
    check_invocation_secrets(ledger, inv)
    after = tokens(ws.db_url)
    deleted = check_tokens(ledger, before, after, "after the signal")
    where = moment(ws.db_url, runs_before, deleted, TOKENS_EXPIRED, delay, lease)
    ledger.fault(f"{signal.Signals(sig).name} {where}")
    killed_run = history(ws.db_url)[runs_before:]
    if sig == signal.SIGTERM:
        if killed_run and killed_run[0]["status"] != "succeeded":
            ledger.check(code == 143, f"SIGTERM mid-run exited {code}, not 143: {inv.stderr[-300:]}")
            ledger.check(killed_run[0]["status"] == "interrupted", f"run recorded {killed_run[0]['status']}")
            ledger.figures["worst SIGTERM-to-exit s"] = round(max(ledger.figures.get("worst SIGTERM-to-exit s", 0),
                                                                  to_exit), 3)
        else:
            ledger.check(code in (0, 143, -signal.SIGTERM), f"SIGTERM before/after the run exited {code}")
        waited = lock_free_after(ws, "refresh-token-cleanup", ledger, bound=0.0)
    else:
        ledger.check(code == -signal.SIGKILL or code == 0, f"SIGKILL gave exit {code}")
        bound = 2.0 if lease else 0.0
        waited = lock_free_after(ws, "refresh-token-cleanup", ledger, bound=bound)
        if killed_run and killed_run[0]["status"] == "running":  # killed before it recorded its end
            final = {r["id"]: r["status"] for r in history(ws.db_url)}[killed_run[0]["id"]]
            ledger.check(final == "abandoned", f"the killed run ended {final}, not abandoned")
    ledger.figures["longest lock wait s"] = round(max(ledger.figures.get("longest lock wait s", 0), waited), 3)
    final_tokens = tokens(ws.db_url)
    ledger.check(not any(row[1].startswith("old") for row in final_tokens), "expired tokens left after the follow-up")
    ledger.check(sum(row[1].startswith("fresh") for row in final_tokens) == TOKENS_FRESH * (round_no + 1),
                 "fresh tokens missing after the follow-up")


def measure_span(ws: Workspace) -> float:
    """How long a whole run takes here: the kills are spread over that."""
    add_tokens(ws.db_url, "warmup")
    start = time.monotonic()
    fork(ws, "refresh-token-cleanup", "--force").wait(timeout=300)
    return max(0.5, time.monotonic() - start)


def tokens_scenario(report: Report, database: str, lock: str, sig: int, rounds: int, seconds: float,
                    rng: random.Random) -> None:
    budget = Budget(rounds, seconds)
    name = f"{signal.Signals(sig).name} refresh-token-cleanup, lock {lock}"
    with report.scenario(name, database, budget) as ledger, tempfile.TemporaryDirectory(prefix="cw-crash-") as tmp, \
            fresh_database(database, Path(tmp)) as url:
        ws = Workspace(Path(tmp) / "ws", url).prepare(TOKEN_CONFIG.format(lock=lock))
        span = measure_span(ws)
        ledger.figure("run s", round(span, 2))
        # The warm-up's fresh tokens count as round -1's: shift the expected totals by one round.
        for round_no in budget:
            token_round(ws, ledger, rng, round_no + 1, sig, lock == "lease", span)
            ledger.rounds = round_no + 1
        check_database_secrets(ledger, url)


def email_round(ws: Workspace, ledger, rng: random.Random, round_no: int, sig: int, log: Path,  # noqa: ANN001
                span: float, killed_ids: set[int]) -> None:
    add_emails(ws.db_url, EMAILS, f"round {round_no}")
    before = email_states(ws.db_url)
    inv = fork(ws, "email-queue", "--force")
    time.sleep(rng.uniform(0, span))
    signalled = time.monotonic()
    inv.signal(sig)
    code = inv.wait(timeout=120)
    to_exit = time.monotonic() - signalled
    check_invocation_secrets(ledger, inv)
    states = email_states(ws.db_url)
    ledger.check(set(before) <= set(states), "an email row disappeared")
    stranded = [i for i, (status, _) in states.items() if status == "sending"]
    ledger.fault(f"{signal.Signals(sig).name} " + ("with rows left sending" if stranded else "without rows sending"))
    if sig == signal.SIGTERM:
        ledger.check(code in (0, 143, -signal.SIGTERM), f"SIGTERM gave exit {code}: {inv.stderr[-300:]}")
        if code == 143:
            ledger.figures["worst SIGTERM-to-exit s"] = round(max(ledger.figures.get("worst SIGTERM-to-exit s", 0),
                                                                  to_exit), 3)
    else:
        killed_ids.update(i for i, (status, _) in states.items() if status != "sent")
    for _ in range(10):
        aged = age_claims(ws.db_url)
        if sig == signal.SIGTERM:
            ledger.check(aged == 0 or code != 143, f"{aged} rows left in sending after a graceful stop")
        follow = fork(ws, "email-queue", "--force", "--json")
        follow.wait(timeout=300)
        check_invocation_secrets(ledger, follow)
        if all(status == "sent" for status, _ in email_states(ws.db_url).values()):
            break
    states = email_states(ws.db_url)
    ledger.check(all(status == "sent" for status, _ in states.values()),
                 f"emails not sent after the follow-ups: {[i for i, s in states.items() if s[0] != 'sent'][:10]}")
    accepted, _ = smtp_log(log)
    lost = [i for i in states if accepted.get(i, 0) == 0]
    ledger.check(not lost, f"emails marked sent that the server never accepted: {lost[:10]}")
    duplicates = [i for i, n in accepted.items() if n > 1]
    unexplained = [i for i in duplicates if i not in killed_ids]
    ledger.check(not unexplained, f"duplicates without a killed sender: {unexplained[:10]}")
    ledger.figures["duplicates (killed sender)"] = len(duplicates)
    ledger.figures["emails"] = len(states)


def emails_scenario(report: Report, database: str, sig: int, rounds: int, seconds: float, rng: random.Random) -> None:
    budget = Budget(rounds, seconds)
    with report.scenario(f"{signal.Signals(sig).name} email-queue", database, budget) as ledger, \
            tempfile.TemporaryDirectory(prefix="cw-crash-mail-") as tmp, \
            fresh_database(database, Path(tmp)) as url, smtp_sink(Path(tmp)) as (port, log):
        ws = Workspace(Path(tmp) / "ws", url).prepare(EMAIL_CONFIG.format(port=port))
        add_emails(url, EMAILS, "warm-up")
        start = time.monotonic()
        fork(ws, "email-queue", "--force").wait(timeout=300)
        span = max(0.3, time.monotonic() - start)
        ledger.figure("run s", round(span, 2))
        killed_ids: set[int] = set()
        for round_no in budget:
            email_round(ws, ledger, rng, round_no, sig, log, span, killed_ids)
            ledger.rounds = round_no + 1
        check_database_secrets(ledger, url)


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__.splitlines()[0], rounds=100, seconds=3600)
    parser.add_argument("--signals", default="KILL,TERM", help="KILL, TERM or both")
    parser.add_argument("--jobs", default="tokens,emails", help="tokens, emails or both")
    args = parser.parse_args(argv)
    rng = random.Random(seed_from(args))
    report = Report("crash", "Crash and stop at any point: SIGKILL and SIGTERM at random moments")
    preload()
    databases = selected_backends(args, report)
    sigs = [getattr(signal, f"SIG{s.strip()}") for s in args.signals.split(",")]
    plan = []
    for sig in sigs:
        for database in databases:
            if "tokens" in args.jobs:
                plan += [("tokens", database, DEFAULT_LOCK[database], sig), ("tokens", database, "lease", sig)]
            if "emails" in args.jobs:
                plan.append(("emails", database, "", sig))
    budget = Budget(len(plan), args.max_seconds)
    for i, (job, database, lock, sig) in enumerate(plan):
        share = budget.split(len(plan) - i)
        if job == "tokens":
            tokens_scenario(report, database, lock, sig, args.rounds, share, rng)
        else:
            emails_scenario(report, database, sig, args.rounds, share, rng)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
