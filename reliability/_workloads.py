"""The runs that crash.py kills and graceful_stop.py stops, and what must hold of their data afterwards.

refresh-token-cleanup works through expired tokens among tokens it must keep (not expired, or
expired within `retention_days`), inserted in a shuffled order. Rounds alternate two layouts: the
expired tokens in groups of `batch_size` that share one expiry, or all of them tied on one expiry
(as after "log everyone out"). Deleting by expiry, batches are keyset on (expires_at, id), so what
went must be the first expired rows in that order, whatever sizes the batches took: a partial
batch shows as a tie cut at a row, never as rows missing out of order. Sweeping in storage order
(SQLite rowid, PostgreSQL ctid: when expired rows are many), a batch is a range of storage
positions: what went must then be the first expired rows in that order. SQLite uses the sweep
unless the file has more pages than expired rows, so the file lock's scenario pads the file to see
the expiry order there too (the lease's, with more rows, sees the sweep); MariaDB always deletes by
expiry.

email-queue sends to reliability/smtp_sink.py on loopback, which logs every Message-ID it
accepts; the Message-ID carries the row id, so the log tells losses and duplicates per row.

A run is frozen with SIGSTOP at a random moment, looked at (`Inspector.moment`: lock, history
row, data, open transactions, the lease) and then signalled: frozen, it cannot move on between
the look and the signal, so each signal is classified by where it really landed.
"""

from __future__ import annotations

import fcntl
import json
import random
import signal
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from _common import (
    MYSQL_ADMIN_URL,
    PG_ADMIN_URL,
    Invocation,
    Ledger,
    Workspace,
    add_emails,
    check_invocation_secrets,
    checker_engine,
    email_states,
    fork,
    smtp_log,
    spawn,
)

TOKENS, EMAILS = "refresh-token-cleanup", "email-queue"
DEFAULT_LOCK = {"sqlite": "file", "postgres": "postgres", "mariadb": "mysql"}
BATCH = 25  # tokens per batch at most: many short batches, so a random moment often falls inside one
GROUPS = 60  # groups of BATCH expired tokens per round
KEPT = 200  # tokens per round that must survive: half not expired, half expired within the retention
LEASE_TTL = 2.0  # the smallest the configuration takes: renewed every second, so during most runs
VISIBILITY = 10.0  # email-queue's smallest visibility_timeout (10 x the smallest smtp_timeout)
EMAILS_PER_ROUND = 150
LEASE_RUN = 2.5  # seconds a run takes with the lease: it renews at 1 s and 2 s, so many moments follow a renewal
LEASE_CAPS = (1000, 2000)  # groups of tokens, emails: the most a lease round gets, however slow the machine
STATES = ("pending", "sending", "sent", "failed")

TOKEN_CONFIG = """
[locks]
backend = "{lock}"
lease_ttl = "{ttl:g}s"

[jobs.refresh-token-cleanup]
batch_size = {batch}
"""
EMAIL_CONFIG = """
[locks]
backend = "{lock}"
lease_ttl = "{ttl:g}s"

[jobs.email-queue]
batch_size = 5000
smtp_host = "127.0.0.1"
smtp_port = {port}
smtp_timeout = "1s"
visibility_timeout = "{visibility:g}s"
retry_base = "1s"
max_attempts = 20
"""


def token_config(lock: str) -> str:
    return TOKEN_CONFIG.format(lock=lock, ttl=LEASE_TTL, batch=BATCH)


def email_config(lock: str, port: int) -> str:
    return EMAIL_CONFIG.format(lock=lock, ttl=LEASE_TTL, port=port, visibility=VISIBILITY)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def dialect(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql" if url.startswith("postgresql") else "mysql"


# ---------------------------------------------------------------- run history

def runs_of(url: str, job: str) -> list[dict]:
    from sqlalchemy import select

    from jobs.models import runs

    eng = checker_engine(url)
    with eng.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(runs).where(runs.c.job_name == job)
                                              .order_by(runs.c.id)).mappings()]
    eng.dispose()
    return rows


def run_of(url: str, job: str, pid: int) -> dict | None:
    """The history row of the invocation with this pid, if it recorded one."""
    rows = [r for r in runs_of(url, job) if r["pid"] == pid]
    return rows[-1] if rows else None


def report_of(inv: Invocation) -> dict:
    """The invocation's --json report (empty when it printed none: killed, or stopped before it could)."""
    for line in reversed(inv.stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return {}
    return {}


# ---------------------------------------------------------------- tokens

@dataclass(frozen=True)
class Token:
    id: int
    group: int | None  # None: must be kept
    place: tuple  # storage order: (rowid,) on SQLite and MariaDB, (block, offset) on PostgreSQL
    expires: object = None  # as the database returns it: the job's expiry order is (expires, id)


def pad_sqlite(url: str, pages: int = 4096) -> None:
    """More pages than expired rows: the job then deletes by expiry on SQLite too."""
    eng = checker_engine(url)
    with eng.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS reliability_padding (b BLOB)")
        conn.exec_driver_sql("INSERT INTO reliability_padding VALUES (zeroblob(?))", (pages * 4096,))
    eng.dispose()


def add_tokens(url: str, rng: random.Random, tag: str, groups: int = GROUPS, tied: bool = False) -> None:
    """`groups` x BATCH expired tokens (one expiry per group, or tied: one expiry for all) and KEPT tokens to
    keep, in a random order."""
    from sqlalchemy import MetaData, Table, insert

    now = utcnow()
    rows = []
    for g in range(groups):
        expires = now - timedelta(days=30) + timedelta(seconds=0 if tied else g)
        rows += [{"user_id": 1, "token_hash": f"exp-{tag}-{g}-{i}", "expires_at": expires} for i in range(BATCH)]
    for i in range(KEPT):
        expires = now + timedelta(days=30, seconds=i) if i % 2 else now - timedelta(days=6, seconds=-i)
        rows.append({"user_id": 1, "token_hash": f"keep-{tag}-{i}", "expires_at": expires})
    rng.shuffle(rows)
    for row in rows:
        row["created_at"] = now - timedelta(days=60)
    eng = checker_engine(url)
    table = Table("refresh_tokens", MetaData(), autoload_with=eng)
    with eng.begin() as conn:
        conn.execute(insert(table), rows)
    eng.dispose()


def tokens(url: str) -> dict[int, Token]:
    from sqlalchemy import text

    eng = checker_engine(url)
    place = "ctid::text" if dialect(url) == "postgresql" else "id"
    with eng.connect() as conn:
        rows = conn.execute(text(f"SELECT id, token_hash, {place}, expires_at FROM refresh_tokens")).all()
    eng.dispose()
    out = {}
    for rid, token_hash, where, expires in rows:
        group = int(token_hash.split("-")[2]) if token_hash.startswith("exp-") else None
        spot = tuple(int(x) for x in where.strip("()").split(",")) if isinstance(where, str) else (where,)
        out[rid] = Token(rid, group, spot, expires)
    return out


def delete_kept(url: str) -> None:
    """The round's survivors, once checked, go: every round starts from the same table size."""
    from sqlalchemy import text

    eng = checker_engine(url)
    with eng.begin() as conn:
        conn.execute(text("DELETE FROM refresh_tokens WHERE token_hash LIKE 'keep-%'"))
    eng.dispose()


def check_tokens(ledger: Ledger, before: dict[int, Token], after: dict[int, Token], what: str,
                 expiry_only: bool) -> str:
    """No kept token gone; the expired ones gone are the first in the job's order, (expires_at, id) or storage.
    Returns the order seen."""
    kept_gone = [t.id for t in before.values() if t.group is None and t.id not in after]
    ledger.check(not kept_gone, f"{what}: {len(kept_gone)} tokens that had not expired (or were within the "
                                f"retention) are gone, e.g. {kept_gone[:5]}")
    expired = [t for t in before.values() if t.group is not None]
    gone = {t.id for t in expired if t.id not in after}
    if not gone or len(gone) == len(expired):
        return "none or all"
    in_expiry = sorted(expired, key=lambda t: (t.expires, t.id))
    if {t.id for t in in_expiry[:len(gone)]} == gone:
        return "expiry"
    in_storage = sorted(expired, key=lambda t: t.place)
    if not expiry_only and {t.id for t in in_storage[:len(gone)]} == gone:
        return "storage"
    ledger.check(False, f"{what}: the {len(gone)} expired tokens gone are not the first in (expires_at, id) order"
                        + ("" if expiry_only else " nor in storage order"))
    return "broken"


# ---------------------------------------------------------------- emails

def email_claims(url: str) -> dict[int, tuple[str, str | None, datetime | None]]:
    """id -> (status, claimed_by, claimed_at)."""
    from sqlalchemy import text

    eng = checker_engine(url)
    with eng.connect() as conn:
        rows = {r[0]: (r[1], r[2], r[3]) for r in conn.execute(text(
            "SELECT id, status, claimed_by, claimed_at FROM email_queue"))}
    eng.dispose()
    for rid, (status, by, at) in rows.items():
        if isinstance(at, str):
            rows[rid] = (status, by, datetime.fromisoformat(at))
    return rows


@dataclass
class Mailbox:
    """What the SMTP server accepted against what the database says, over a whole scenario."""

    url: str
    log: Path
    may_repeat: set[int] = field(default_factory=set)  # accepted while not recorded sent when a sender died

    def after_kill(self) -> int:
        """Rows the server accepted that the dead sender never recorded: their resend is an allowed duplicate."""
        time.sleep(0.1)  # what the server was sent before the kill, it finishes handling
        accepted, _ = smtp_log(self.log)
        states = email_states(self.url)
        unrecorded = {i for i in accepted if states.get(i, ("?",))[0] != "sent"}
        self.may_repeat |= unrecorded
        return len(unrecorded)

    def unrecorded(self) -> set[int]:
        accepted, _ = smtp_log(self.log)
        states = email_states(self.url)
        return {i for i in accepted if states.get(i, ("?",))[0] != "sent"}

    def check(self, ledger: Ledger, expected: set[int], what: str) -> None:
        """Every row there, in a known state; every `sent` row accepted by the server; duplicates explained."""
        states = email_states(self.url)
        accepted, _ = smtp_log(self.log)
        missing = expected - set(states)
        ledger.check(not missing, f"{what}: {len(missing)} email rows disappeared, e.g. {sorted(missing)[:5]}")
        odd = {i: s for i, (s, _) in states.items() if s not in STATES}
        ledger.check(not odd, f"{what}: rows in unknown states {list(odd.items())[:5]}")
        lost = [i for i, (s, _) in states.items() if s == "sent" and not accepted.get(i)]
        ledger.check(not lost, f"{what}: {len(lost)} emails marked sent that the server never accepted: {lost[:5]}")
        repeated = {i for i, n in accepted.items() if n > 1}
        unexplained = repeated - self.may_repeat
        ledger.check(not unexplained, f"{what}: {len(unexplained)} emails sent twice although no sender died between "
                                      f"their acceptance and its record: {sorted(unexplained)[:5]}")
        ledger.figure("duplicates (accepted, then the sender died)", sum(accepted[i] - 1 for i in repeated))

    def check_no_stale_claims(self, ledger: Ledger, since: datetime, what: str) -> None:
        """A run started at `since` must have reclaimed every row claimed a visibility timeout before."""
        stale = [i for i, (s, _, at) in email_claims(self.url).items()
                 if s == "sending" and at is not None and at < since - timedelta(seconds=VISIBILITY + 0.5)]
        ledger.check(not stale, f"{what}: {len(stale)} emails still `sending` past the visibility timeout: {stale[:5]}")


# ---------------------------------------------------------------- where a frozen run is

@dataclass
class Moment:
    where: str
    run: dict | None = None  # its history row, when it had recorded one
    renewed: bool = False  # the lease had been renewed at least once
    renewing: bool = False  # a renewal statement was in flight
    lease_left: float = 0.0  # seconds the lease still had by the database server's clock


class Inspector:
    """Looks at a job's invocation while it is frozen (SIGSTOP): its lock, history row, data, transactions."""

    def __init__(self, backend: str, ws: Workspace, job: str, lock: str) -> None:
        self.backend, self.ws, self.job, self.lock = backend, ws, job, lock
        self.url = ws.db_url
        self.database = self._database_name()

    def _database_name(self) -> str:
        from sqlalchemy.engine import make_url

        return make_url(self.url).database or ""

    def _admin(self):
        """Server-wide views (other sessions' transactions, named locks) need the administrator."""
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        return create_engine(PG_ADMIN_URL if self.backend == "postgres" else MYSQL_ADMIN_URL, poolclass=NullPool)

    def lock_held(self) -> bool:
        from sqlalchemy import text

        if self.lock == "file":
            path = self.ws.path / "locks" / f"{self.job}.lock"
            if not path.exists():
                return False
            with open(path, "a") as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                fcntl.flock(fh, fcntl.LOCK_UN)
                return False
        if self.lock == "lease":
            return self.lease()[1] > 0
        eng = self._admin()
        with eng.connect() as conn:
            if self.lock == "postgres":
                from jobs.locks.postgres import advisory_key

                key = advisory_key(self.job)
                held = conn.execute(text(
                    "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database WHERE l.granted "
                    "AND l.locktype = 'advisory' AND d.datname = :db AND ((l.classid::bigint << 32) | l.objid::bigint) "
                    "= :key"), {"db": self.database, "key": key}).scalar()
            else:
                from jobs.locks.mysql import lock_name

                held = conn.execute(text("SELECT IS_USED_LOCK(:n) IS NOT NULL"),
                                    {"n": lock_name(self.job, self.database)}).scalar()
        eng.dispose()
        return bool(held)

    def lease(self) -> tuple[bool, float]:
        """(renewed at least once, seconds left) of the job's lease."""
        from sqlalchemy import text

        from jobs.locks.lease import server_now

        eng = checker_engine(self.url)
        with eng.connect() as conn:
            row = conn.execute(text(f"SELECT locked_at, lock_until, {server_now(dialect(self.url))} "
                                    "FROM job_leases WHERE job_name = :j"), {"j": self.job}).first()
        eng.dispose()
        if row is None:
            return False, 0.0
        at, until, now = (datetime.fromisoformat(v[:26]) if isinstance(v, str) else v for v in row)
        return (until - at).total_seconds() > LEASE_TTL + 0.05, max(0.0, (until - now).total_seconds())

    def transactions(self) -> tuple[bool, bool]:
        """(a write transaction of the job is open, a lease renewal is in flight)."""
        from sqlalchemy import text

        if self.backend == "sqlite":
            path = self.url.split("///", 1)[1]
            conn = sqlite3.connect(path, timeout=0, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
                return False, False
            except sqlite3.OperationalError:
                return True, False
            finally:
                conn.close()
        eng = self._admin()
        with eng.connect() as conn:
            if self.backend == "postgres":
                rows = conn.execute(text(
                    "SELECT query FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid() "
                    "AND xact_start IS NOT NULL"), {"db": self.database}).all()
            else:
                rows = conn.execute(text(
                    "SELECT t.trx_query FROM information_schema.innodb_trx t JOIN information_schema.processlist p "
                    "ON p.id = t.trx_mysql_thread_id WHERE p.db = :db AND p.id <> CONNECTION_ID()"),
                    {"db": self.database}).all()
        eng.dispose()
        queries = [str(r[0] or "") for r in rows]
        renewing = any("job_leases" in q and q.lstrip().upper().startswith("UPDATE") for q in queries)
        return any("job_leases" not in q for q in queries), renewing

    def moment(self, inv: Invocation, progress: tuple[int, int]) -> Moment:
        """Where the frozen invocation is. progress: (work done, work there was) of this round."""
        run = run_of(self.url, self.job, inv.pid)
        m = Moment("", run)
        if self.lock == "lease":
            m.renewed, m.lease_left = self.lease()
            if run is None or run["status"] == "running":
                m.renewing = self.transactions()[1] if self.backend != "sqlite" else False
        done, total = progress
        if run is None:
            m.where = "lock held, run not yet recorded" if self.lock_held() else "before the lock"
        elif run["status"] != "running":
            m.where = "after the run was recorded"
        elif done >= total:
            m.where = "after the last batch, before the record"
        elif self.transactions()[0]:
            m.where = "inside a batch"
        elif done == 0:
            m.where = "run recorded, before the first batch"
        else:
            m.where = "between batches"
        return m


# ---------------------------------------------------------------- one interrupted run

def start(ws: Workspace, job: str, round_no: int) -> Invocation:
    """Most runs forked (cheap); every tenth a real `python -m cli`, whose start-up is long enough to be hit."""
    return (spawn if round_no % 10 == 9 else fork)(ws, job, "--force", "--json")


def freeze_at_random(inv: Invocation, rng: random.Random, span: float, done: Callable[[], bool], url: str) -> None:
    """SIGSTOP after a uniformly random delay over the run; one round in four aims at the end of the work
    instead (the short stretch between the last batch and the record): it polls `done()` and freezes then.
    On SQLite a process frozen while it closes its last connection holds the database's exclusive lock (the
    final checkpoint), which no reader gets past: it is let go for a moment and frozen again until the
    database can be read, so every frozen moment is one that can be looked at."""
    if rng.random() < 0.25:
        deadline = time.monotonic() + span * 3 + 5
        while time.monotonic() < deadline and inv.poll() is None and not done():
            pass
    else:
        time.sleep(rng.uniform(0, span * 1.15))
    inv.signal(signal.SIGSTOP)
    if dialect(url) != "sqlite":
        return
    deadline = time.monotonic() + 30
    while not sqlite_readable(url) and time.monotonic() < deadline:
        inv.signal(signal.SIGCONT)
        time.sleep(0.005)
        inv.signal(signal.SIGSTOP)


LEFT_SQL = {TOKENS: "SELECT count(*) FROM refresh_tokens WHERE token_hash LIKE 'exp-%'",
            EMAILS: "SELECT count(*) FROM email_queue WHERE id >= {first} AND status <> 'sent'"}


def frozen_run(ws: Workspace, insp: Inspector, rng: random.Random, job: str, round_no: int, span: float,
               total: int, first_email: int = 0) -> tuple[Invocation, Moment, int]:
    """Start a run, freeze it at a random moment and look where it is: (the run, the moment, work left)."""
    left_sql = LEFT_SQL[job].format(first=first_email)
    inv = start(ws, job, round_no)
    stream = Stream(ws.db_url)
    try:
        freeze_at_random(inv, rng, span, lambda: stream.scalar(left_sql) == 0, ws.db_url)
        left = stream.scalar(left_sql)
    finally:
        stream.close()
    if job == EMAILS:
        time.sleep(0.02)  # what the frozen sender had already handed the server, the server finishes
    return inv, insp.moment(inv, (total - left, total)), left


def sqlite_readable(url: str) -> bool:
    """Whether a reader gets into the SQLite database now (a frozen process may hold it exclusively)."""
    conn = sqlite3.connect(url.split("///", 1)[1], timeout=0.1, isolation_level=None)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


def follow_up(ws: Workspace, job: str, ledger: Ledger, free_from: float) -> tuple[Invocation, dict, float]:
    """Invoke the job until one is not `locked`. Any invocation started after `free_from` (monotonic) must get
    the lock. Returns (that invocation, its report, seconds from free_from until it started)."""
    while True:
        inv = fork(ws, job, "--force", "--json")
        inv.wait(timeout=300)
        check_invocation_secrets(ledger, inv, f"the follow-up {job}")
        report = report_of(inv)
        if report.get("status") != "locked":
            return inv, report, inv.started - free_from
        if not ledger.check(inv.started < free_from + 0.25,
                            f"the lock was still taken {inv.started - free_from:.2f} s after it had to be free"):
            return inv, report, inv.started - free_from
        if time.monotonic() - free_from > 60:
            return inv, report, inv.started - free_from
        time.sleep(0.05)


class Stream:
    """A persistent autocommit connection for polling while a run goes (a new connection per poll is slower
    than the stretch being aimed at)."""

    def __init__(self, url: str) -> None:
        self._eng = checker_engine(url)
        self._conn = self._eng.connect().execution_options(isolation_level="AUTOCOMMIT")

    def scalar(self, sql: str) -> int:
        from sqlalchemy import text

        return self._conn.execute(text(sql)).scalar() or 0

    def close(self) -> None:
        self._conn.close()
        self._eng.dispose()


def measure(ws: Workspace, job: str) -> float:
    """Seconds a whole invocation takes here: the random moments are spread over that."""
    start_at = time.monotonic()
    inv = fork(ws, job, "--force", "--json")
    inv.wait(timeout=300)
    return max(0.3, time.monotonic() - start_at)


def warm_up(ws: Workspace, job: str, lock: str, rng: random.Random, lease_run: float = LEASE_RUN) -> tuple[int, float]:
    """Run the job on a round's work: (work per round: token groups or emails, seconds a run takes).
    With the lease the work grows until a run takes about `lease_run` seconds (0: it does not grow)."""
    size, cap = (GROUPS, LEASE_CAPS[0]) if job == TOKENS else (EMAILS_PER_ROUND, LEASE_CAPS[1])
    while True:
        if job == TOKENS:
            add_tokens(ws.db_url, rng, "warm-up", size)
        else:
            add_emails(ws.db_url, size, "warm-up")
        span = measure(ws, job)
        if job == TOKENS:
            delete_kept(ws.db_url)
        if lock != "lease" or span >= lease_run * 0.8 or size >= cap:
            return size, span
        size = min(cap, int(size * min(4.0, lease_run / max(span - 0.3, 0.1))) + 1)


def email_moment(moment: Moment, url: str, mailbox: Mailbox, pid: int) -> str:
    """The token moments, told in the queue's terms: what matters is what the server had accepted."""
    if moment.where not in ("inside a batch", "between batches", "run recorded, before the first batch"):
        return moment.where.replace("last batch", "last email")
    claims = email_claims(url)
    mine = {i for i, (status, by, _) in claims.items() if status == "sending" and by and by.endswith(f":{pid}")}
    if mine & mailbox.unrecorded():
        return "emails accepted by the server, not yet recorded as sent"
    if mine:
        return "emails claimed, every accepted one recorded"
    return "run recorded, no email claimed yet"


def lease_figures(ledger: Ledger, lock: str, moment: Moment, what: str) -> None:
    """How many signals came after a renewal of the lease, or during one; the most TTL a lease had left."""
    if lock != "lease":
        return
    for happened, name in ((moment.renewed, f"{what} after a lease renewal"),
                           (moment.renewing, f"{what} during a lease renewal")):
        if happened:
            tally(ledger, name)
    most(ledger, f"longest lease left at a {what[:-1]} s", moment.lease_left)


def most(ledger: Ledger, name: str, value: float) -> None:
    ledger.figure(name, round(max(float(ledger.figures.get(name, 0.0)), value), 3))


def tally(ledger: Ledger, name: str) -> None:
    """One more of a counted figure."""
    ledger.figure(name, int(ledger.figures.get(name, 0)) + 1)


def add_plan_arguments(parser) -> None:
    parser.add_argument("--jobs", default="tokens,emails", help="tokens, emails or both")
    parser.add_argument("--locks", default="default,lease", help="default (the database's own), lease, or both")
    parser.add_argument("--lease-run", type=float, default=LEASE_RUN,
                        help=f"seconds a run with the lease is made to take, so that it renews (default {LEASE_RUN:g}; "
                             "0: the default lock's amount of work)")


def plan(args, backends: list[str]) -> list[tuple[str, str, str]]:
    """(job, backend, lock) of every scenario the arguments ask for."""
    return [(job, backend, DEFAULT_LOCK[backend] if which == "default" else "lease")
            for backend in backends
            for job in ("tokens", "emails") if job in args.jobs
            for which in ("default", "lease") if which in args.locks]
