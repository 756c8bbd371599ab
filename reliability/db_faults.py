"""Database faults: the server gone before a run, gone and back during one, connections killed, locks
held past the lock timeout, on PostgreSQL and MariaDB.

"Stopping the server" is done by a TCP proxy in front of the real server (reliability/tcp_proxy.py):
taking it down cuts every connection with a reset and refuses new ones, which is what a client sees of
a stopped server, without stopping a server other programs share. Connections are also terminated on
the real server (pg_terminate_backend, KILL). Scenarios and invariants:

- down before a run: exit 75 within the retry budget ([retry] max_time) plus connect time, exactly one
  line on stderr with --quiet (no traceback without it), nothing recorded;
- down and back within the retry budget, lease lock: the batch in flight is retried in-process and the
  run succeeds; with a session lock (advisory / GET_LOCK) the lock's session is gone with the outage:
  the run must stop before its next commit (never two runs at once), its failure recorded;
- down for longer than the budget: exit 75; once the server is back, the next invocation records the
  dead run as abandoned and completes the work;
- connections of the run terminated on the server: retried in-process, the run succeeds; the lock's own
  session terminated: the run stops before its next commit, recorded as failed;
- rows locked by another transaction past the lock timeout (PostgreSQL lock_timeout, MariaDB
  innodb_lock_wait_timeout): the batch is retried in-process and succeeds once the lock goes;
- always: only whole batches deleted, no token that had not expired is gone, the next run finishes
  the work, no secret in any output or row.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

from _common import (Budget, Proxy, Report, Workspace, arguments, check_database_secrets, check_invocation_secrets,
                     checker_engine, fork, fresh_database, preload, seed_from, selected_backends)
from crash import TOKENS_EXPIRED, add_tokens, check_tokens, history, tokens

SESSION_LOCK = {"postgres": "postgres", "mariadb": "mysql"}
CONFIG = """
[locks]
backend = "{lock}"
lease_ttl = "10s"

[retry]
attempts = 8
initial_wait = "0.2s"
max_wait = "1s"
max_time = "{budget}s"

[jobs.refresh-token-cleanup]
batch_size = {batch}
"""
BUDGET_S = 4


def workspace(tmp: Path, url: str, lock: str, batch: int = 10, name: str = "ws") -> Workspace:
    return Workspace(tmp / name, url).prepare(CONFIG.format(lock=lock, budget=BUDGET_S, batch=batch))


def finish_and_check(ws: Workspace, ledger, before: list, runs_before: int, what: str) -> None:  # noqa: ANN001
    """The next invocation completes the work; no run is left looking alive."""
    inv = fork(ws, "refresh-token-cleanup", "--force", "--json")
    code = inv.wait(timeout=300)
    check_invocation_secrets(ledger, inv)
    ledger.check(code == 0, f"{what}: the follow-up run exited {code}: {inv.stderr[-300:]}")
    after = tokens(ws.db_url)
    check_tokens(ledger, before, after, f"{what}, after the follow-up")
    ledger.check(not any(row[1].startswith("old") for row in after), f"{what}: expired tokens left after the follow-up")
    statuses = [r["status"] for r in history(ws.db_url)[runs_before:]]
    ledger.check("running" not in statuses, f"{what}: a run still looks alive: {statuses}")


def run_with_fault(ws: Workspace, ledger, fault, rng: random.Random, what: str) -> tuple[int, str, list, int]:  # noqa: ANN001
    """Start a run, apply fault() after a random delay once it is working, wait; (exit, stderr, tokens before, runs before)."""
    add_tokens(ws.db_url, f"{what}-{ledger.rounds}")
    before = tokens(ws.db_url)
    runs_before = len(history(ws.db_url))
    inv = fork(ws, "refresh-token-cleanup", "--force")
    deadline = time.monotonic() + 30
    while len([r for r in tokens(ws.db_url) if r[1].startswith("old")]) > TOKENS_EXPIRED - 30:
        if inv.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    time.sleep(rng.uniform(0, 0.3))
    fault()
    code = inv.wait(timeout=300)
    check_invocation_secrets(ledger, inv)
    check_tokens(ledger, before, tokens(ws.db_url), f"{what}, right after the run")
    return code, inv.stderr, before, runs_before


def down_before_run(ledger, ws: Workspace, proxy: Proxy, url: str) -> None:  # noqa: ANN001
    runs_before = len(history(url))
    proxy.down()
    for quiet in (True, False):
        start = time.monotonic()
        inv = fork(ws, *(["--quiet"] if quiet else []), "refresh-token-cleanup", "--force")
        code = inv.wait(timeout=120)
        took = time.monotonic() - start
        check_invocation_secrets(ledger, inv)
        lines = [line for line in inv.stderr.splitlines() if line.strip()]
        ledger.check(code == 75, f"server down: exit {code}, not 75: {inv.stderr[-300:]}")
        ledger.check(took <= BUDGET_S + 6, f"server down: exit after {took:.1f} s, budget {BUDGET_S} s")
        ledger.check("Traceback" not in inv.stderr, "server down: a traceback")
        if quiet:
            ledger.check(len(lines) == 1, f"server down, --quiet: {len(lines)} lines: {inv.stderr[-300:]}")
        ledger.figures["worst exit after s"] = round(max(ledger.figures.get("worst exit after s", 0), took), 2)
    ledger.fault("server down before the run")
    proxy.up()
    ledger.check(len(history(url)) == runs_before, "server down: a run was recorded")


def outage(ledger, ws: Workspace, proxy: Proxy, rng: random.Random, seconds: float, lock: str) -> None:  # noqa: ANN001
    def fault() -> None:
        proxy.down()
        time.sleep(seconds)
        proxy.up()

    what = f"outage {seconds:.1f}s, lock {lock}"
    code, err, before, runs_before = run_with_fault(ws, ledger, fault, rng, what)
    ledger.fault(f"server down {'within' if seconds < BUDGET_S else 'beyond'} the retry budget mid-run")
    dead = history(ws.db_url)[runs_before:]
    if seconds >= BUDGET_S:
        # 75: the retry budget ran out; 1: it was the session lock's loss that stopped the run first.
        ok = code in (75, 0) or (code == 1 and lock != "lease" and "lock's database session was lost" in err)
        ledger.check(ok, f"{what}: exit {code}: {err[-300:]}")
    elif lock == "lease":
        ledger.check(code == 0, f"{what}: the run did not ride the outage out: exit {code}: {err[-300:]}")
    else:
        # The lock's own session died with the outage: stopping is the only safe answer, unless the run
        # had already finished (or the outage fell between its last batch and its end).
        ledger.check(code in (0, 1, 75), f"{what}: exit {code}: {err[-300:]}")
        if code == 1 and dead:
            ledger.check(dead[0]["status"] == "failed" and "lock" in (dead[0]["error"] or ""),
                         f"{what}: lost lock recorded as {dead[0]['status']}: {dead[0]['error']}")
    ledger.figures[f"exit codes, {'long' if seconds >= BUDGET_S else 'short'} outage"] = ",".join(
        sorted(set(str(ledger.figures.get(f"exit codes, {'long' if seconds >= BUDGET_S else 'short'} outage", "")).split(",")
                   + [str(code)]) - {""}))
    finish_and_check(ws, ledger, before, runs_before, what)
    if dead and code != 0:
        final = {r["id"]: r["status"] for r in history(ws.db_url)}[dead[0]["id"]]
        ledger.check(final in ("abandoned", "failed"), f"{what}: the run of the outage ended {final}")


def server_sessions(url: str, database: str, lock_only: bool | None) -> list[int]:
    """The job's sessions on the real server (its lock's session alone, all but it, or all)."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    eng = checker_engine(url)
    with eng.connect() as conn:
        if database == "postgres":
            rows = conn.execute(text(
                "SELECT a.pid, EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory') "
                "FROM pg_stat_activity a WHERE a.datname = :db AND a.pid <> pg_backend_pid()"), {"db": name}).all()
        else:
            from jobs.locks.mysql import lock_name

            holder = conn.execute(text("SELECT IS_USED_LOCK(:name)"),
                                  {"name": lock_name("refresh-token-cleanup", name)}).scalar()
            ids = conn.execute(text("SELECT id FROM information_schema.processlist WHERE db = :db "
                                    "AND id <> CONNECTION_ID()"), {"db": name}).scalars().all()
            rows = [(i, i == holder) for i in ids]
    eng.dispose()
    return [pid for pid, is_lock in rows if lock_only is None or is_lock == lock_only]


def terminate(url: str, database: str, pids: list[int]) -> None:
    from sqlalchemy import text

    eng = checker_engine(url)
    with eng.connect() as conn:
        for pid in pids:
            try:
                if database == "postgres":
                    conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                else:
                    conn.execute(text(f"KILL CONNECTION {int(pid)}"))
            except Exception:  # noqa: BLE001 - it may have gone by itself
                pass
    eng.dispose()


def killed_connections(ledger, ws: Workspace, database: str, rng: random.Random, lock_session: bool) -> None:  # noqa: ANN001
    victims: list[int] = []

    def fault() -> None:
        victims.extend(server_sessions(ws.db_url, database, lock_only=lock_session))
        terminate(ws.db_url, database, victims)

    what = "lock session killed" if lock_session else "work sessions killed"
    code, err, before, runs_before = run_with_fault(ws, ledger, fault, rng, what)
    ledger.fault(f"{what} ({'pg_terminate_backend' if database == 'postgres' else 'KILL'})", max(1, len(victims)))
    dead = history(ws.db_url)[runs_before:]
    if lock_session:
        ledger.check(code in (0, 1), f"{what}: exit {code}: {err[-300:]}")
        if code == 1:
            ledger.check(bool(dead) and dead[0]["status"] == "failed", f"{what}: recorded {dead and dead[0]['status']}")
    else:
        ledger.check(code == 0, f"{what}: the run did not retry in-process: exit {code}: {err[-300:]}")
    finish_and_check(ws, ledger, before, runs_before, what)


def lock_timeout(ledger, ws: Workspace, database: str, rng: random.Random) -> None:  # noqa: ANN001
    """Another transaction holds the token rows longer than the lock timeout, then lets go."""
    from sqlalchemy import text

    add_tokens(ws.db_url, f"locked-{ledger.rounds}")
    before = tokens(ws.db_url)
    runs_before = len(history(ws.db_url))
    blocker = checker_engine(ws.db_url)
    conn = blocker.connect()
    tx = conn.begin()
    conn.execute(text("UPDATE refresh_tokens SET user_id = user_id"))
    inv = fork(ws, "refresh-token-cleanup", "--force")
    # Held until the run has hit the lock timeout and said it retries, then a little longer, then let go.
    deadline = time.monotonic() + 60
    while inv.poll() is None and "retrying" not in inv.stderr and time.monotonic() < deadline:
        time.sleep(0.05)
    extra = rng.uniform(0, 1.5)
    time.sleep(extra)
    tx.rollback()
    conn.close()
    code = inv.wait(timeout=300)
    blocker.dispose()
    check_invocation_secrets(ledger, inv)
    retries = inv.stderr.count("retry")
    ledger.fault("rows locked past the lock timeout")
    ledger.check(code == 0, f"lock timeout: exit {code}: {inv.stderr[-400:]}")
    ledger.check(retries > 0, f"lock timeout: no in-process retry logged: {inv.stderr[-300:]}")
    ledger.figures["retries logged"] = ledger.figures.get("retries logged", 0) + retries
    finish_and_check(ws, ledger, before, runs_before, "lock timeout")


def with_lock_timeout(url: str, database: str) -> str:
    """The database URL with a short lock wait for the job's sessions."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    if database == "postgres":
        admin = checker_engine(url)
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"ALTER DATABASE {make_url(url).database} SET lock_timeout = '500ms'"))
        admin.dispose()
        return url
    return make_url(url).update_query_dict({"init_command": "SET SESSION innodb_lock_wait_timeout = 1"}) \
        .render_as_string(hide_password=False)


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__.splitlines()[0], rounds=20, seconds=1500, backends=("postgres", "mariadb"))
    parser.add_argument("--scenarios", default=None, help="comma-separated names (default: all)")
    args = parser.parse_args(argv)
    rng = random.Random(seed_from(args))
    report = Report("db_faults", "Database faults: server down, down and back, connections killed, lock timeouts")
    preload()
    databases = [d for d in selected_backends(args, report) if d != "sqlite"]
    scenarios = ["down before a run", "short outage, lease", "short outage, session lock", "long outage",
                 "work sessions killed", "lock session killed", "lock timeout"]
    if args.scenarios:
        scenarios = [s for s in scenarios if s in args.scenarios.split(",")]
    total = Budget(len(databases) * len(scenarios), args.max_seconds)
    left = len(databases) * len(scenarios)
    for database in databases:
        target = "127.0.0.1:5432" if database == "postgres" else "127.0.0.1:3306"
        for name in scenarios:
            budget = Budget(args.rounds, total.split(left))
            left -= 1
            with report.scenario(name, database, budget) as ledger, tempfile.TemporaryDirectory(prefix="cw-dbf-") as tmp, \
                    fresh_database(database, Path(tmp)) as url:
                proxy = Proxy(target)
                try:
                    lock = "lease" if name in ("short outage, lease", "work sessions killed") else SESSION_LOCK[database]
                    if name == "lock timeout":
                        ws = workspace(Path(tmp), with_lock_timeout(url, database), lock, batch=2000)
                    elif name in ("work sessions killed", "lock session killed"):
                        ws = workspace(Path(tmp), url, lock)
                    else:
                        ws = workspace(Path(tmp), proxy.url(url), lock)
                    for _ in budget:
                        if name == "down before a run":
                            down_before_run(ledger, ws, proxy, url)
                        elif name.startswith("short outage"):
                            outage(ledger, ws, proxy, rng, rng.uniform(0.3, BUDGET_S / 2), lock)
                        elif name == "long outage":
                            outage(ledger, ws, proxy, rng, BUDGET_S + rng.uniform(1, 3), lock)
                        elif name.endswith("sessions killed") or name == "lock session killed":
                            killed_connections(ledger, ws, database, rng, lock_session=name == "lock session killed")
                        else:
                            lock_timeout(ledger, ws, database, rng)
                        ledger.rounds += 1
                    check_database_secrets(ledger, url)
                finally:
                    proxy.close()
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
