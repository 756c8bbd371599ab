"""Database faults: servers stopped and killed before and during runs, sessions killed, lock wait and
statement timeouts, deadlocks, and SQLite's write lock held by another process.

Whole servers are stopped (a clean fast shutdown) and SIGKILLed for real, on private PostgreSQL and
MariaDB instances this script starts on free ports (reliability/servers.py): the shared servers are
never stopped. Sessions are killed (pg_terminate_backend, KILL CONNECTION) and rows locked on the
shared servers, in databases of this script's own. Scenarios and the invariants checked:

- down before a run (stopped or killed): exit 75, within the retry budget (`[retry] attempts`, or
  `max_time`: the time from start to exit, less a no-retry invocation's, is at most max_time + one
  max_wait; the retries logged span max_time, or number `attempts`), exactly one error line naming the
  problem (`--quiet`: the only line), nothing on stdout, no traceback, nothing recorded;
- down before a run, back within the budget: the run succeeds after logged retries;
- stopped or killed mid-run, back after the run gave up: exit 75 with one error line; the batch in
  flight rolled back (no unexpired token gone, the deleted tokens are a prefix of the deletion order,
  their count a whole number of batches); once the server is back, the next invocation marks the dead
  run `abandoned` and completes the work;
- stopped or killed mid-run, back within the budget: with a lease the run rides it out (exit 0); with a
  session lock (advisory / GET_LOCK) the lock died with the server, so the run stops before its next
  commit, exit 1, recorded `failed` (never a run that might overlap another); data as above;
- the run's work sessions killed mid-run: retried in-process, the run succeeds, data intact;
- the lock's session killed mid-run (test-sleeper, a second invocation started as soon as the lock is
  free): the first run commits no batch once the second has entered (never two at once), fails with
  exit 1 recorded `failed`; the second succeeds;
- rows locked by another transaction past lock_timeout / innodb_lock_wait_timeout, or past
  statement_timeout / max_statement_time, and a real deadlock (a second transaction taking the rows
  in the opposite order): the batch is retried in-process (retries counted from the log) and the run
  succeeds once the blocker goes;
- SQLite: another process holds the write lock (BEGIN IMMEDIATE) for a while (the run waits and
  succeeds) or past busy_timeout (SQLITE_BUSY, retried in-process);
- always: no secret in any output or row.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from _common import (
    MYSQL_ADMIN_URL,
    SECRETS,
    Budget,
    Invocation,
    Ledger,
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
)
from servers import PrivateServer, private_server, unavailable

JOB = "refresh-token-cleanup"
SESSION_LOCK = {"postgres": "postgres", "mariadb": "mysql", "sqlite": "file"}
CONFIG = """
[locks]
backend = "{lock}"
lease_ttl = "{lease_ttl}s"
host_loss_bound = "{bound}s"

[retry]
attempts = {attempts}
initial_wait = "{initial}s"
max_wait = "{max_wait}s"
max_time = "{max_time}s"

[jobs.refresh-token-cleanup]
batch_size = {batch}

[jobs.test-sleeper]
batches = 6
batch_seconds = 0.4
"""
GIVE_UP = {"attempts": 50, "initial": 0.1, "max_wait": 0.5, "max_time": 2}  # gives up soon: the outage outlasts it
RIDE_OUT = {"attempts": 60, "initial": 0.1, "max_wait": 0.5, "max_time": 10}  # outlasts a restart
BY_ATTEMPTS = {"attempts": 4, "initial": 0.2, "max_wait": 1, "max_time": 60}
BY_TIME = {"attempts": 100, "initial": 0.2, "max_wait": 1, "max_time": 2}
NO_RETRY = {"attempts": 1, "initial": 0.2, "max_wait": 1, "max_time": 2}
LEASE_TTL_S = 10
BATCH = 8  # rows per batch in the mid-run scenarios: a run is ~190 batches
SLACK_S = 1.5  # a loaded 2-core machine's scheduling noise on top of a time bound
TOKENS_EXPIRED, TOKENS_FRESH = 1500, 300
SQLITE_BUSY_TIMEOUT_S = 30  # jobs/db.py: PRAGMA busy_timeout
RETRY_LINE = re.compile(r"failed \(.*\); retrying$|failed again \(attempt \d+\)")


# ---------------------------------------------------------------- looking at runs and data

def history(url: str) -> list[dict]:
    """Every run of every job, oldest first."""
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
    fresh_made = 0
    for i in range(n):
        rank = (i * 7919) % n
        fresh = rank % 6 == 5 and fresh_made < TOKENS_FRESH
        fresh_made += fresh
        expires = now + timedelta(days=30, seconds=rank) if fresh else now - timedelta(days=30, seconds=-rank)
        rows.append({"user_id": 1, "token_hash": f"{'fresh' if fresh else 'old'}-{tag}-{i}",
                     "expires_at": expires, "created_at": now - timedelta(days=60)})
    with eng.begin() as conn:
        conn.execute(insert(table), rows)
    eng.dispose()


def tokens(url: str) -> list[tuple[int, str, datetime]]:
    """(id, token_hash, expires_at) of every token."""
    from sqlalchemy import MetaData, Table, select

    eng = checker_engine(url)
    table = Table("refresh_tokens", MetaData(), autoload_with=eng)
    with eng.connect() as conn:
        rows = [tuple(r) for r in conn.execute(select(table.c.id, table.c.token_hash, table.c.expires_at))]
    eng.dispose()
    return rows  # type: ignore[return-value]


def lock_free_after(ws: Workspace, job: str, ledger: Ledger, bound: float) -> float:
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


def workspace(tmp: Path, url: str, name: str, lock: str, retry: dict, batch: int = BATCH,
              prepare: bool = True, bound: int = 60) -> Workspace:
    """A workspace on url; prepare=False for a second one on a database whose tables exist already."""
    ws = Workspace(tmp / name, url)
    config = CONFIG.format(lock=lock, batch=batch, lease_ttl=LEASE_TTL_S, bound=bound, **retry)
    if prepare:
        return ws.prepare(config)
    ws.write_config(config)
    return ws


@dataclass
class Tokens:
    """The tokens before a run, and the orders a run may delete the expired ones in."""

    rows: list
    storage: list[int]  # expired ids in storage order (PostgreSQL: ctid; else id, which is rowid / clustered key)
    expiry: list[int]  # expired ids by expiry
    block: dict[int, int]  # PostgreSQL: id -> heap block


def fresh_tokens(url: str, tag: str) -> Tokens:
    """The token table emptied (TRUNCATE: storage order is insertion order again) and refilled."""
    from sqlalchemy import text

    eng = checker_engine(url)
    with eng.begin() as conn:
        conn.execute(text("DELETE FROM refresh_tokens" if eng.dialect.name == "sqlite" else "TRUNCATE refresh_tokens"))
    add_tokens(url, tag)
    rows = tokens(url)
    expired = {r[0] for r in rows if r[1].startswith("old")}
    block: dict[int, int] = {}
    storage = sorted(expired)
    if eng.dialect.name == "postgresql":
        with eng.connect() as conn:
            places = [(int(b), int(o), i) for i, b, o in conn.execute(text(
                "SELECT id, (ctid::text::point)[0], (ctid::text::point)[1] FROM refresh_tokens"))]
        storage = [i for _, _, i in sorted(places) if i in expired]
        block = {i: b for b, _, i in places}
    eng.dispose()
    expiry = [r[0] for r in sorted((r for r in rows if r[0] in expired), key=lambda r: (r[2], r[0]))]
    return Tokens(rows, storage, expiry, block)


def expired_left(url: str) -> int:
    from sqlalchemy import text

    eng = checker_engine(url)
    with eng.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM refresh_tokens WHERE token_hash LIKE 'old%'")).scalar()
    eng.dispose()
    return int(n)


def wait_for_deletions(inv: Invocation, url: str, n: int, timeout: float = 60) -> None:
    """Until the run has deleted n expired tokens (or ended)."""
    deadline = time.monotonic() + timeout
    while inv.poll() is None and time.monotonic() < deadline and expired_left(url) > TOKENS_EXPIRED - n:
        time.sleep(0.01)


def retry_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if RETRY_LINE.search(line)]


def stamp(line: str) -> float:
    return datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()


def batch_end(t: Tokens, order: list[int], n: int) -> bool:
    """Whether the first n rows of `order` end on a batch boundary. By expiry, batches are BATCH rows.
    PostgreSQL's storage-order sweep (a scan budget of one heap block per batch at these sizes) cuts
    each block's expired rows into BATCH-row batches from the block's first one, plus the block's rest."""
    if n in (0, len(order)):
        return True
    if order is not t.storage or not t.block:
        return n % BATCH == 0
    block = t.block[order[n - 1]]
    in_block = sum(1 for i in order[:n] if t.block[i] == block)
    return in_block % BATCH == 0 or t.block[order[n]] != block


def check_data(ledger: Ledger, url: str, t: Tokens, what: str, done: bool, crash_lost: bool = False) -> int:
    """No unexpired token gone; the deleted ones are whole batches at the start of a deletion order; with
    done, no expired token left. crash_lost: a server crash may have lost batches committed
    asynchronously (PostgreSQL's synchronous_commit = off) while the run went on after it: they must be
    whole consecutive batches. Returns #deleted."""
    after = tokens(url)
    left = {r[0] for r in after}
    deleted = {i for i in t.storage if i not in left}
    ledger.check(all(r[0] in left for r in t.rows if r[1].startswith("fresh")), f"{what}: a token that had not expired is gone")
    fits = []
    for order in (t.storage, t.expiry):
        last = max((n for n, i in enumerate(order) if i in deleted), default=-1)
        holes = [n for n in range(last + 1) if order[n] not in deleted]
        if holes and not (crash_lost and holes[-1] - holes[0] + 1 == len(holes)):
            continue
        ends = [last + 1] + ([holes[0], holes[-1] + 1] if holes else [])
        fits.append(all(batch_end(t, order, n) for n in ends))
    ledger.check(bool(fits), f"{what}: the {len(deleted)} deleted tokens are not the start of a deletion order")
    ledger.check(any(fits) or not fits, f"{what}: {len(deleted)} tokens deleted, not whole batches")
    lost = TOKENS_EXPIRED - len(deleted)
    if done and crash_lost and lost:
        add(ledger, "deletions a server crash took back (asynchronous commit)", lost)
    elif done:
        ledger.check(lost == 0, f"{what}: {lost} expired tokens left")
    ledger.check(sum(r[1].startswith("fresh") for r in after) == TOKENS_FRESH, f"{what}: fresh tokens missing")
    return len(deleted)


def check_error_line(ledger: Ledger, inv: Invocation, quiet: bool, what: str, only_retries: bool = True,
                     names: str = "database unreachable") -> None:
    """Exactly one error line naming the problem; with --quiet the only line, else the only one besides
    log lines (only retries before a run); no traceback, nothing on stdout."""
    lines = [line for line in inv.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("cronwarden: error:")]
    ledger.check("Traceback" not in inv.stderr + inv.stdout, f"{what}: a traceback: {inv.stderr[-400:]}")
    ledger.check(len(errors) == 1 and names in errors[0], f"{what}: error lines {errors!r}")
    ledger.check(inv.stdout.strip() == "", f"{what}: something on stdout: {inv.stdout[:200]!r}")
    if quiet:
        ledger.check(len(lines) == 1, f"{what}, --quiet: {len(lines)} lines on stderr: {inv.stderr[-400:]}")
    else:
        log_line = RETRY_LINE if only_retries else re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+Z (INFO|WARNING|ERROR)")
        others = [line for line in lines if line not in errors and not log_line.search(line)]
        ledger.check(not others, f"{what}: lines other than {'retries' if only_retries else 'log lines'} and the "
                                 f"error: {others[:3]!r}")


def worst(ledger: Ledger, name: str, value: float) -> None:
    ledger.figure(name, round(max(float(ledger.figures.get(name, 0)), value), 2))


def add(ledger: Ledger, name: str, n: int = 1) -> None:
    ledger.figure(name, int(ledger.figures.get(name, 0)) + n)


def follow_up(ledger: Ledger, ws: Workspace, lock: str, runs_before: int, before: Tokens, what: str) -> None:
    """The next invocations, once the server is back: the first to get the lock (at once, or once a lease
    left behind has expired) records the dead run as abandoned and completes the work."""
    dead = [r for r in history(ws.db_url)[runs_before:] if r["status"] == "running"]
    waited = lock_free_after(ws, JOB, ledger, bound=LEASE_TTL_S if lock == "lease" else 0.0)
    worst(ledger, f"longest wait for the lock afterwards s ({'lease' if lock == 'lease' else 'session lock'})", waited)
    check_data(ledger, ws.db_url, before, f"{what}, after the follow-up", done=True)
    final = {r["id"]: r for r in history(ws.db_url)}
    for run in dead:
        ledger.check(final[run["id"]]["status"] == "abandoned",
                     f"{what}: the dead run ended {final[run['id']]['status']}, not abandoned")
    if dead:
        add(ledger, "dead runs marked abandoned")
    statuses = [r["status"] for r in list(final.values())[runs_before:]]
    ledger.check("running" not in statuses, f"{what}: a run still looks alive: {statuses}")


# ---------------------------------------------------------------- sessions on the shared servers

def server_sessions(url: str, backend: str, lock_only: bool | None, job: str = JOB) -> list[int]:
    """The job's sessions (its lock's session alone, all but it, or all), never the caller's."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    eng = checker_engine(url)
    with eng.connect() as conn:
        if backend == "postgres":
            rows = conn.execute(text(
                "SELECT a.pid, EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory') "
                "FROM pg_stat_activity a WHERE a.datname = :db AND a.pid <> pg_backend_pid() "
                "AND a.application_name = 'cronwarden'"), {"db": name}).all()
        else:
            from jobs.locks.mysql import lock_name

            holder = conn.execute(text("SELECT IS_USED_LOCK(:name)"), {"name": lock_name(job, name)}).scalar()
            ids = conn.execute(text("SELECT id FROM information_schema.processlist WHERE db = :db "
                                    "AND id <> CONNECTION_ID() AND user = :user"),
                               {"db": name, "user": make_url(url).username}).scalars().all()
            rows = [(i, i == holder) for i in ids]
    eng.dispose()
    return [pid for pid, is_lock in rows if lock_only is None or bool(is_lock) == lock_only]


def terminate(url: str, backend: str, pids: list[int]) -> None:
    from sqlalchemy import text

    eng = checker_engine(url)
    with eng.connect() as conn:
        for pid in pids:
            try:
                if backend == "postgres":
                    conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                else:
                    conn.execute(text(f"KILL CONNECTION {int(pid)}"))
            except Exception:  # noqa: BLE001 - it may have ended by itself
                pass
    eng.dispose()


def lock_free(url: str, backend: str, job: str) -> bool:
    """No session holds the job's lock (on PostgreSQL: no advisory lock at all in this database)."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from jobs.locks.mysql import lock_name

    eng = checker_engine(url)
    with eng.connect() as conn:
        if backend == "postgres":
            free = conn.execute(text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")).scalar() == 0
        else:
            free = conn.execute(text("SELECT IS_FREE_LOCK(:n)"), {"n": lock_name(job, make_url(url).database)}).scalar() == 1
    eng.dispose()
    return free


def side_rows(url: str, pid: int, event: str) -> int:
    from sqlalchemy import text

    eng = checker_engine(url)
    with eng.connect() as conn:
        try:
            n = conn.execute(text("SELECT count(*) FROM side_effects WHERE pid = :p AND event = :e"),
                             {"p": pid, "e": event}).scalar()
        except Exception:  # noqa: BLE001 - the table appears with the first entry
            n = 0
    eng.dispose()
    return int(n)


# ---------------------------------------------------------------- scenarios on private servers

def down_before_run(ledger: Ledger, server: PrivateServer, tmp: Path, url: str, rounds: Budget,
                    rng: random.Random) -> None:
    lock = SESSION_LOCK[server.kind]
    spaces = {name: workspace(tmp, url, name, lock, retry, prepare=name == "by-time")
              for name, retry in (("by-time", BY_TIME), ("by-attempts", BY_ATTEMPTS), ("no-retry", NO_RETRY))}
    # What an invocation costs without retrying: the budget is measured on top of it.
    server.stop()
    baseline = {}
    for launch in (fork, spawn):
        inv = launch(spaces["no-retry"], JOB, "--force")
        code = inv.wait(timeout=120)
        ledger.check(code == 75, f"no retries, server down: exit {code}")
        baseline[launch] = inv.ended - inv.started
    server.start()
    ledger.figure("no-retry exit s (fork, spawn)", f"{baseline[fork]:.2f}, {baseline[spawn]:.2f}")
    for r in rounds:
        ledger.rounds = r
        runs_before = len(history(url))
        how = rng.choice(("stop", "kill"))
        getattr(server, how)()
        ledger.fault(f"server {'stopped' if how == 'stop' else 'SIGKILLed'}")
        by, quiet, launch = ("by-attempts" if r % 2 else "by-time"), r % 4 in (0, 3), spawn if r % 3 == 2 else fork
        retry = BY_ATTEMPTS if by == "by-attempts" else BY_TIME
        inv = launch(spaces[by], *(["--quiet"] if quiet else []), JOB, "--force")
        code = inv.wait(timeout=180)
        took = inv.ended - inv.started - baseline[launch]
        server.start()
        what = f"down before a run ({by}, {'quiet' if quiet else 'logging'})"
        check_invocation_secrets(ledger, inv)
        ledger.check(code == 75, f"{what}: exit {code}, not 75: {inv.stderr[-300:]}")
        check_error_line(ledger, inv, quiet, what)
        if by == "by-time":
            bound = retry["max_time"] + retry["max_wait"] + SLACK_S
        else:
            bound = (retry["attempts"] - 1) * retry["max_wait"] + SLACK_S
        ledger.check(took <= bound, f"{what}: {took:.2f} s past a no-retry exit, bound {bound:.1f} s")
        worst(ledger, f"worst s past a no-retry exit ({by}, bound {bound:g})", took)
        if not quiet:
            tries = retry_lines(inv.stderr)
            if by == "by-attempts":
                ledger.check(len(tries) == retry["attempts"],
                             f"{what}: {len(tries)} attempts logged, configured {retry['attempts']}")
            elif ledger.check(len(tries) >= 2, f"{what}: {len(tries)} attempts logged"):
                span = stamp(tries[-1]) - stamp(tries[0])
                ledger.check(retry["max_time"] - 0.1 <= span <= retry["max_time"] + retry["max_wait"] + SLACK_S,
                             f"{what}: retried for {span:.2f} s, max_time {retry['max_time']} s")
                worst(ledger, "longest retry span s (max_time 2)", span)
        ledger.check(len(history(url)) == runs_before, f"{what}: a run was recorded")


def back_within_budget(ledger: Ledger, server: PrivateServer, tmp: Path, url: str, rounds: Budget,
                       rng: random.Random) -> None:
    ws = workspace(tmp, url, "ws", SESSION_LOCK[server.kind], RIDE_OUT)
    for r in rounds:
        ledger.rounds = r
        before = fresh_tokens(url, f"back{r}")
        runs_before = len(history(url))
        how = rng.choice(("stop", "kill"))
        getattr(server, how)()
        ledger.fault(f"server {'stopped' if how == 'stop' else 'SIGKILLed'}, back 0.3-3 s later")
        inv = fork(ws, JOB, "--force")
        time.sleep(rng.uniform(0.3, 3.0))
        server.start()
        code = inv.wait(timeout=180)
        check_invocation_secrets(ledger, inv)
        ledger.check(code == 0, f"server back within the budget: exit {code}: {inv.stderr[-300:]}")
        tries = retry_lines(inv.stderr)
        ledger.check(len(tries) >= 1, "server back within the budget: no retry logged")
        add(ledger, "retries logged", len(tries))
        check_data(ledger, url, before, "server back within the budget", done=True)
        ledger.check([r["status"] for r in history(url)[runs_before:]] == ["succeeded"],
                     "server back within the budget: not one succeeded run")


def stopped_mid_run(ledger: Ledger, server: PrivateServer, tmp: Path, url: str, rounds: Budget,
                    rng: random.Random, back_within: bool) -> None:
    retry = RIDE_OUT if back_within else GIVE_UP
    spaces = {lock: workspace(tmp, url, lock, lock, retry, prepare=lock == "lease")
              for lock in ("lease", SESSION_LOCK[server.kind])}
    for r in rounds:
        ledger.rounds = r
        lock = rng.choice(list(spaces))
        ws = spaces[lock]
        before = fresh_tokens(url, f"mid{r}")
        runs_before = len(history(url))
        inv = fork(ws, JOB, "--force")
        wait_for_deletions(inv, url, 3 * BATCH)
        time.sleep(rng.uniform(0, 0.3))
        finished_first = inv.poll() is not None
        how = rng.choice(("stop", "kill"))
        fault_at = time.monotonic()
        getattr(server, how)()
        ledger.fault(f"server {'stopped' if how == 'stop' else 'SIGKILLed'} mid-run, lock {lock}")
        what = f"{'stopped' if how == 'stop' else 'killed'} mid-run, lock {lock}"
        if back_within:
            time.sleep(rng.uniform(0.2, 2.0))
            server.start()
            code = inv.wait(timeout=180)
        else:
            code = inv.wait(timeout=180)
            worst(ledger, "worst fault-to-exit s", inv.ended - fault_at)
            bound = 2 * (retry["max_time"] + retry["max_wait"]) + 2 * SLACK_S
            ledger.check(finished_first or inv.ended - fault_at <= bound,
                         f"{what}: exit {inv.ended - fault_at:.1f} s after the fault, bound {bound:g} s")
            server.start()
        check_invocation_secrets(ledger, inv)
        add(ledger, f"exit {code}, lock {'lease' if lock == 'lease' else 'session'}")
        if finished_first:
            add(ledger, "runs that ended before the fault")
            ledger.check(code == 0, f"{what}: the run ended before the fault with exit {code}")
        check_data(ledger, url, before, f"{what}, right after the run", done=code == 0,
                   crash_lost=server.kind == "postgres" and how == "kill")
        run = (history(url)[runs_before:] or [None])[0]
        if finished_first:
            pass
        elif not back_within:
            ledger.check(code == 75, f"{what}, back after the run gave up: exit {code}: {inv.stderr[-300:]}")
            check_error_line(ledger, inv, False, what, only_retries=False)
            ledger.check(run is None or run["status"] == "running",
                         f"{what}: the run was recorded {run and run['status']} while the server was down")
        elif lock == "lease":
            ledger.check(code == 0, f"{what}, back within the budget: exit {code}: {inv.stderr[-300:]}")
            add(ledger, "retries logged", len(retry_lines(inv.stderr)))
        else:
            # The lock's session died with the server: another run could have taken the job since.
            ledger.check(code in (0, 1), f"{what}, back within the budget: exit {code}: {inv.stderr[-300:]}")
            if code == 1:
                ledger.check(run is not None and run["status"] == "failed" and "lock" in (run["error"] or ""),
                             f"{what}: a lost lock recorded as {run and (run['status'], run['error'])}: "
                             f"{inv.stderr[-600:]}")
            else:
                ledger.check(run is not None and run["status"] == "succeeded", f"{what}: exit 0 but {run}")
        follow_up(ledger, ws, lock, runs_before, before, what)


# ---------------------------------------------------------------- scenarios on the shared servers

def work_sessions_killed(ledger: Ledger, backend: str, tmp: Path, url: str, rounds: Budget,
                         rng: random.Random) -> None:
    spaces = {lock: workspace(tmp, url, lock, lock, RIDE_OUT, prepare=lock == "lease")
              for lock in ("lease", SESSION_LOCK[backend])}
    for r in rounds:
        ledger.rounds = r
        lock = rng.choice(list(spaces))
        before = fresh_tokens(url, f"kill{r}")
        runs_before = len(history(url))
        inv = fork(spaces[lock], JOB, "--force")
        wait_for_deletions(inv, url, 2 * BATCH)
        for _ in range(rng.randint(1, 3)):
            time.sleep(rng.uniform(0.02, 0.3))
            if inv.poll() is not None:
                break
            victims = server_sessions(url, backend, lock_only=False)
            terminate(url, backend, victims)
            ledger.fault(f"work sessions killed ({'pg_terminate_backend' if backend == 'postgres' else 'KILL CONNECTION'})",
                         len(victims))
        code = inv.wait(timeout=180)
        check_invocation_secrets(ledger, inv)
        ledger.check(code == 0, f"work sessions killed, lock {lock}: exit {code}: {inv.stderr[-300:]}")
        add(ledger, "retries logged", len(retry_lines(inv.stderr)))
        check_data(ledger, url, before, "work sessions killed", done=True)
        ledger.check([x["status"] for x in history(url)[runs_before:]] == ["succeeded"],
                     "work sessions killed: not one succeeded run")


def lock_session_killed(ledger: Ledger, backend: str, tmp: Path, url: str, rounds: Budget,
                        rng: random.Random) -> None:
    ws = workspace(tmp, url, "ws", SESSION_LOCK[backend], RIDE_OUT)
    job = "test-sleeper"
    for r in rounds:
        ledger.rounds = r
        runs_before = len(history(url))
        first = fork(ws, job, "--force")
        deadline = time.monotonic() + 30
        while first.poll() is None and side_rows(url, first.pid, "batch") < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.8))
        victims = server_sessions(url, backend, lock_only=True, job=job)
        terminate(url, backend, victims)
        committed_at_kill = side_rows(url, first.pid, "batch")
        ledger.fault(f"lock session killed ({'pg_terminate_backend' if backend == 'postgres' else 'KILL CONNECTION'})",
                     len(victims))
        deadline = time.monotonic() + 10
        while not lock_free(url, backend, job) and time.monotonic() < deadline:
            time.sleep(0.01)
        second = fork(ws, job, "--force")
        deadline = time.monotonic() + 30
        while second.poll() is None and side_rows(url, second.pid, "enter") < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        committed_when_second_entered = side_rows(url, first.pid, "batch")
        codes = (first.wait(timeout=120), second.wait(timeout=120))
        for inv in (first, second):
            check_invocation_secrets(ledger, inv)
        committed_late = side_rows(url, first.pid, "batch") - committed_when_second_entered
        ledger.check(committed_late == 0, f"lock session killed: the first run committed {committed_late} batches "
                                          "after the second had entered")
        after_kill = side_rows(url, first.pid, "batch") - committed_at_kill
        ledger.check(after_kill <= 1, f"lock session killed: {after_kill} batches committed after the kill")
        add(ledger, "batches committed after the kill", after_kill)
        runs = {x["pid"]: x for x in history(url)[runs_before:]}
        if not victims or first.pid not in runs or runs[first.pid]["status"] == "succeeded":
            add(ledger, "rounds where the first run had ended")
            continue
        ledger.check(codes[0] == 1, f"lock session killed: the first run exited {codes[0]}: {first.stderr[-300:]}")
        ledger.check(runs[first.pid]["status"] == "failed" and "lock" in (runs[first.pid]["error"] or ""),
                     f"lock session killed: the first run recorded {runs[first.pid]['status']}")
        ledger.check(codes[1] == 0 and second.pid in runs and runs[second.pid]["status"] == "succeeded",
                     f"lock session killed: the second run exited {codes[1]}: {second.stderr[-300:]}")


BLOCKED = {
    ("postgres", "lock wait timeout"): ("SET lock_timeout = '300ms'", "LockNotAvailable"),
    ("postgres", "statement timeout"): ("SET statement_timeout = '300ms'", "QueryCanceled"),
    ("postgres", "deadlock"): ("SET deadlock_timeout = '200ms'", "DeadlockDetected"),
    ("mariadb", "lock wait timeout"): ("SET SESSION innodb_lock_wait_timeout = 1", "1205"),
    ("mariadb", "statement timeout"): ("SET SESSION max_statement_time = 0.3", "1969"),
    ("mariadb", "deadlock"): (None, "1213"),
}


def session_setting(url: str, backend: str, kind: str) -> str:
    """The job's sessions get the short timeout: per database on PostgreSQL, by the URL on MariaDB."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    setting = BLOCKED[(backend, kind)][0]
    if setting is None:
        return url
    if backend == "postgres":
        eng = checker_engine(url)
        with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"ALTER DATABASE {make_url(url).database} {setting}"))
        eng.dispose()
        return url
    return make_url(url).update_query_dict({"init_command": setting}).render_as_string(hide_password=False)


def job_waiting(url: str, backend: str, blocker_id: int) -> bool:
    """A session of the job waits for a row lock (MariaDB's view of that needs the PROCESS privilege:
    the administrator's connection looks)."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    eng = checker_engine(url if backend == "postgres" else MYSQL_ADMIN_URL)
    with eng.connect() as conn:
        if backend == "postgres":
            n = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = :db AND pid <> :b "
                                  "AND wait_event_type = 'Lock'"), {"db": name, "b": blocker_id}).scalar()
        else:
            n = conn.execute(text(
                "SELECT count(*) FROM information_schema.innodb_trx t JOIN information_schema.processlist p "
                "ON p.id = t.trx_mysql_thread_id WHERE t.trx_state = 'LOCK WAIT' AND p.db = :db AND p.id <> :b"),
                {"db": name, "b": blocker_id}).scalar()
    eng.dispose()
    return n > 0


def blocked(ledger: Ledger, backend: str, tmp: Path, url: str, rounds: Budget, rng: random.Random, kind: str) -> None:
    """Another transaction holds the expired rows; with a deadlock it then asks for the ones the job holds."""
    from sqlalchemy import text

    expected = BLOCKED[(backend, kind)][1]
    # MariaDB ends the job's lock waits after host_loss_bound / 4 (15 s by default). Here job_waiting()
    # often does not see the job's wait before its 60 s deadline, and the blocker must still find the job
    # waiting when it then asks for the job's rows: the job's waits last 120 s in this scenario.
    ws = workspace(tmp, session_setting(url, backend, kind), "ws", SESSION_LOCK[backend], RIDE_OUT,
                   batch=BATCH if kind != "deadlock" else 5000,
                   bound=480 if (backend, kind) == ("mariadb", "deadlock") else 60)
    blocker = checker_engine(url)
    if backend == "mariadb" and kind == "deadlock":
        with blocker.begin() as conn:
            conn.execute(text("CREATE TABLE IF NOT EXISTS ballast (id INT PRIMARY KEY)"))
    for r in rounds:
        ledger.rounds = r
        before = fresh_tokens(url, f"{kind[:4]}{r}")
        runs_before = len(history(url))
        expired = sorted(before.storage)
        conn = blocker.connect()
        tx = conn.begin()
        victim = "job"
        if kind == "deadlock":
            # The blocker must not be the one the server picks: PostgreSQL aborts the session whose
            # deadlock_timeout fires first, InnoDB the transaction that changed fewer rows.
            if backend == "postgres":
                conn.execute(text("SET LOCAL deadlock_timeout = '10s'"))
                me = conn.execute(text("SELECT pg_backend_pid()")).scalar()
            else:
                conn.execute(text("INSERT INTO ballast (id) SELECT seq FROM seq_1_to_20000"))
                me = conn.execute(text("SELECT CONNECTION_ID()")).scalar()
            x = rng.choice(expired[len(expired) // 5: -len(expired) // 5])
            conn.execute(text("SELECT id FROM refresh_tokens WHERE id = :x FOR UPDATE"), {"x": x})
        else:
            me = 0
            conn.execute(text("SELECT id FROM refresh_tokens FOR UPDATE"))
        inv = fork(ws, JOB, "--force")
        deadline = time.monotonic() + 60
        if kind == "deadlock":
            while inv.poll() is None and not job_waiting(url, backend, me) and time.monotonic() < deadline:
                time.sleep(0.01)
            worst(ledger, "longest s until the job waited for the blocker", time.monotonic() - inv.started)
            try:
                conn.execute(text("SELECT id FROM refresh_tokens WHERE token_hash LIKE 'old%' AND id <> :x "
                                  "FOR UPDATE"), {"x": x})
            except Exception:  # noqa: BLE001 - the server chose the blocker after all
                victim = "blocker"
        else:
            while inv.poll() is None and not retry_lines(inv.stderr) and time.monotonic() < deadline:
                time.sleep(0.02)
        time.sleep(rng.uniform(0.1, 1.0))
        ledger.fault(f"{kind} ({'rows held' if kind != 'deadlock' else 'locks taken in the opposite order'})")
        try:
            tx.rollback()
        finally:
            conn.close()
        code = inv.wait(timeout=180)
        check_invocation_secrets(ledger, inv)
        tries = retry_lines(inv.stderr)
        add(ledger, "retries logged", len(tries))
        ledger.check(code == 0, f"{kind}: exit {code}: {inv.stderr[-400:]}")
        if victim == "job":
            ledger.check(any(expected in line for line in tries),
                         f"{kind}: no retry of a {expected} error logged: {inv.stderr[-400:]}")
        else:
            add(ledger, "rounds where the server aborted the blocker instead")
        check_data(ledger, url, before, kind, done=True)
        ledger.check([x["status"] for x in history(url)[runs_before:]] == ["succeeded"], f"{kind}: not one succeeded run")
    blocker.dispose()


HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.readline()
conn.rollback()
"""


def sqlite_write_lock(ledger: Ledger, tmp: Path, url: str, rounds: Budget, rng: random.Random,
                      long_holds: int) -> None:
    """Another process holds SQLite's write lock: shorter than busy_timeout the run waits, longer it
    gets SQLITE_BUSY and retries. (The holder is a process of its own: a connection of this script
    would be inherited by the forked invocation, whose SQLite would then see its own process holding
    the lock for good.)"""
    import subprocess

    from jobs.db import sqlite_path

    ws = workspace(tmp, url, "ws", "file", RIDE_OUT)
    for r in rounds:
        ledger.rounds = r
        long = r < long_holds
        before = fresh_tokens(url, f"busy{r}")
        runs_before = len(history(url))
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(sqlite_path(url))], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        ledger.check(holder.stdout.readline().strip() == "held", "the write lock could not be taken")
        inv = fork(ws, JOB, "--force")
        held = SQLITE_BUSY_TIMEOUT_S + rng.uniform(0.5, 2) if long else rng.uniform(0.2, 3)
        time.sleep(held)
        ledger.fault(f"write lock held {'past' if long else 'within'} busy_timeout")
        holder.communicate("\n", timeout=30)
        code = inv.wait(timeout=180)
        check_invocation_secrets(ledger, inv)
        tries = retry_lines(inv.stderr)
        add(ledger, "retries logged", len(tries))
        worst(ledger, f"longest run s, lock held {'past' if long else 'within'} busy_timeout",
              inv.ended - inv.started)
        ledger.check(code == 0, f"write lock held {held:.1f} s: exit {code}: {inv.stderr[-400:]}")
        if long:
            ledger.check(any("database is locked" in line for line in tries),
                         f"write lock held past busy_timeout: no retry logged: {inv.stderr[-400:]}")
        check_data(ledger, url, before, "write lock held", done=True)
        ledger.check([x["status"] for x in history(url)[runs_before:]] == ["succeeded"],
                     "write lock held: not one succeeded run")


# ---------------------------------------------------------------- the plan

PRIVATE = ("down before a run", "down before a run, back within the budget",
           "stopped mid-run, back after the run gave up", "stopped mid-run, back within the budget")
SHARED = ("work sessions killed mid-run", "lock session killed mid-run", "lock wait timeout", "statement timeout",
          "deadlock")


def run_scenario(name: str, backend: str, ledger: Ledger, tmp: Path, url: str, budget: Budget,
                 rng: random.Random, server: PrivateServer | None, long_holds: int) -> None:
    if name == "down before a run":
        down_before_run(ledger, server, tmp, url, budget, rng)
    elif name == "down before a run, back within the budget":
        back_within_budget(ledger, server, tmp, url, budget, rng)
    elif name.startswith("stopped mid-run"):
        stopped_mid_run(ledger, server, tmp, url, budget, rng, back_within=name.endswith("within the budget"))
    elif name == "work sessions killed mid-run":
        work_sessions_killed(ledger, backend, tmp, url, budget, rng)
    elif name == "lock session killed mid-run":
        lock_session_killed(ledger, backend, tmp, url, budget, rng)
    elif name == "SQLite write lock held by another process":
        sqlite_write_lock(ledger, tmp, url, budget, rng, long_holds)
    else:
        blocked(ledger, backend, tmp, url, budget, rng, name)


@contextmanager
def database(backend: str, tmp: Path, server: PrivateServer | None) -> Iterator[str]:
    if server is None:
        with fresh_database(backend, tmp) as url:
            yield url
        return
    if not server.running():  # a scenario that broke off may have left it down
        server.start()
    with server.database(SECRETS["database"]) as url:
        yield url


def start_servers(backends: list[str], report: Report, stack: ExitStack) -> dict[str, PrivateServer]:
    """A private server per database; one that cannot start is a violation under CI=true, else skipped."""
    servers = {}
    for backend in backends:
        why = unavailable(backend)
        if why is None:
            try:
                servers[backend] = stack.enter_context(private_server(backend))
                continue
            except RuntimeError as exc:
                why = str(exc).splitlines()[0][:300]
        print(f"  {backend}: no private server ({why}); its stop/start scenarios skipped", flush=True)
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            with report.scenario("private server", backend) as ledger:
                ledger.check(False, f"a private {backend} server could not start under CI=true: {why}")
    return servers


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__.splitlines()[0], rounds=10, seconds=1200)
    parser.add_argument("--long-holds", type=int, default=2,
                        help=f"SQLite rounds holding the write lock past busy_timeout ({SQLITE_BUSY_TIMEOUT_S} s each; "
                             "default 2)")
    parser.add_argument("--scenarios", default=None, help="scenario names separated by ';' (default: all)")
    args = parser.parse_args(argv)
    rng = random.Random(seed_from(args))
    report = Report("db_faults", "Database faults: servers stopped and killed, sessions killed, timeouts, deadlocks")
    preload()
    wanted = [b.strip() for b in args.backends.split(",") if b.strip()]
    shared = selected_backends(args, report)
    with ExitStack() as stack:
        servers = start_servers([b for b in wanted if b != "sqlite"], report, stack)
        plan = [(name, b) for b in ("postgres", "mariadb") if b in servers for name in PRIVATE]
        plan += [(name, b) for b in ("postgres", "mariadb") if b in shared for name in SHARED]
        plan += [("SQLite write lock held by another process", "sqlite")] if "sqlite" in shared else []
        if args.scenarios:
            plan = [(n, b) for n, b in plan if n in [x.strip() for x in args.scenarios.split(";")]]
        total = Budget(len(plan), args.max_seconds)
        for i, (name, backend) in enumerate(plan):
            budget = Budget(args.rounds, total.split(len(plan) - i))
            server = servers.get(backend) if name in PRIVATE else None
            with report.scenario(name, backend, budget) as ledger, \
                    tempfile.TemporaryDirectory(prefix="cw-dbf-") as tmp, database(backend, Path(tmp), server) as url:
                run_scenario(name, backend, ledger, Path(tmp), url, budget, rng, server, args.long_holds)
                check_database_secrets(ledger, url)
    print("\nFigures")
    for lg in report.ledgers:
        print(f"  {lg.scenario} [{lg.backend}]: " + (", ".join(f"{k} {v}" for k, v in lg.figures.items()) or "-"))
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
