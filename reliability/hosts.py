"""Hosts that vanish: three hosts in network namespaces share one PostgreSQL or MariaDB server.

Each host (hostnet.py) has its own network namespace and address on a private bridge, its own
hostname, working directory, config file and lock folder; the database is a private server
(servers.py) listening on the bridge's address. The job is `test-sleeper`, whose batches hold their
transaction open (and, here, one row every run updates, so a run that takes over needs that row).

- windows: per lock backend, every host starts several invocations of a due job at about the same
  time, window after window: exactly one run per window succeeds (one enter ... exit, one pid), its
  history names the host it ran on, every other invocation exits 0 (`locked` / `not_due`).
- partition: the holder's link is cut while it holds an open batch transaction; the two other hosts
  invoke the job every second, as cron would. Within the stated bound (`[locks] host_loss_bound`) one
  of them completes the job; the holder commits nothing after the cut, its run ends `failed` or
  `abandoned` (never `succeeded`) and shows the batches it had committed, exactly one success is
  recorded, and the holder itself exits 75 or 1 within the bound.
- no route: a host whose routes are gone retries, then exits 75 with one error line.
- clock skew: with the lease, hosts whose clocks are 10 minutes ahead or behind (time-machine in
  their processes) invoke the job with --force while another host holds it: none takes it early,
  since the lease is timed by the database server's clock.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from _common import (
    SECRETS,
    Budget,
    Invocation,
    Ledger,
    Report,
    Workspace,
    arguments,
    check_invocation_secrets,
    checker_engine,
    fork,
    preload,
    seed_from,
    wait_all,
)
from db_faults import check_error_line, history, retry_lines, worst
from hostnet import Host, Network, hosts, unavailable
from mutual_exclusion import new_rows, open_due_window
from servers import PrivateServer, private_server
from servers import unavailable as server_unavailable

JOB = "test-sleeper"
COMBOS = (("postgres", "postgres"), ("postgres", "lease"), ("mariadb", "mysql"), ("mariadb", "lease"))
PER_HOST = 3  # invocations per host and window
HOLD = 0.5  # seconds the holder's batches keep their transaction open
TICK = 1.0  # seconds between a taker host's invocations (cron, sped up)
SLACK = 3.0  # seconds past the bound: a taker's tick, its own short run, process start-up
SKEW = timedelta(minutes=10)
SESSION_LOCK = {"postgres": "postgres", "mariadb": "mysql"}


def knows_host_loss_bound() -> bool:
    from jobs.config import LockConfig

    return "host_loss_bound" in getattr(LockConfig, "__dataclass_fields__", {})


def config(lock: str, bound: float, *, batches: int, hold: float, retry_time: float, ttl: float = 0) -> str:
    """A host's config: the lease lives half the bound (unless `ttl`), so a taker can have it well within it."""
    bound_line = f'host_loss_bound = "{bound:g}s"\n' if knows_host_loss_bound() else ""
    return f"""
[locks]
backend = "{lock}"
lease_ttl = "{ttl or max(bound / 2, 2):g}s"
{bound_line}
[retry]
max_time = "{retry_time:g}s"

[jobs.test-sleeper]
interval = "1h"
retry_delays = ["1s"]
batches = {batches}
batch_seconds = {hold}
shared_row = true
"""


def on_host_net(url: str, net: Network) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(host=net.gateway).render_as_string(hide_password=False)


def spaces_for(tmp: Path, url: str, net: Network, name: str, texts: list[str]) -> list[Workspace]:
    """One working directory per host (its own config and lock folder); the first creates the tables."""
    spaces = []
    for i, (host, text) in enumerate(zip(net.hosts, texts)):
        ws = Workspace(tmp / name / host.name, url)
        if i == 0:
            ws.prepare(text)
        else:
            ws.write_config(text)
        spaces.append(ws)
    return spaces


def status_of(inv: Invocation) -> str | None:
    try:
        return json.loads(inv.stdout)["status"]
    except (ValueError, KeyError, TypeError):
        return None


def side_rows(url: str) -> list[dict]:
    from sqlalchemy import MetaData, Table, select

    eng = checker_engine(url)
    try:
        side = Table("side_effects", MetaData(), autoload_with=eng)
        with eng.connect() as conn:
            return [dict(r) for r in conn.execute(select(side).order_by(side.c.id)).mappings()]
    except Exception:  # noqa: BLE001 - not created yet: the first batch creates it
        return []
    finally:
        eng.dispose()


# ---------------------------------------------------------------- one run per window

def windows(report: Report, kind: str, lock: str, url: str, net: Network, tmp: Path, rounds: int,
            seconds: float, rng: random.Random) -> None:
    budget = Budget(rounds, seconds)
    with report.scenario(f"3 hosts x {PER_HOST} invocations per window, lock {lock}", kind, budget) as ledger:
        text = config(lock, 60, batches=2, hold=0.2, retry_time=30)
        spaces = spaces_for(tmp, url, net, f"windows-{lock}", [text] * len(net.hosts))
        names = {h.name for h in net.hosts}
        marks = [0, 0]
        for r in budget:
            ledger.rounds = r
            if r:
                open_due_window(url)
            invocations = []
            for _ in range(PER_HOST):
                for ws, host in zip(spaces, net.hosts):
                    invocations.append(fork(ws, JOB, "--json", enter=host.enter))
                time.sleep(rng.uniform(0, 0.05))
            codes = wait_all(invocations, timeout=120)
            ledger.fault("invocations on 3 hosts", len(invocations))
            ledger.check(codes == [0] * len(codes), f"exit codes {codes}: {invocations[0].stderr[-300:]}")
            statuses = sorted(str(status_of(inv)) for inv in invocations)
            ledger.check(statuses.count("succeeded") == 1 and set(statuses) <= {"succeeded", "locked", "not_due"},
                         f"statuses {statuses}")
            runs, effects = new_rows(url, *marks)
            marks[0] = runs[-1]["id"] if runs else marks[0]
            marks[1] = effects[-1]["id"] if effects else marks[1]
            ledger.check(len(runs) == 1 and runs[0]["status"] == "succeeded" and runs[0]["host"] in names,
                         f"one run per window, on one of the hosts: {[(h['status'], h['host']) for h in runs]}")
            pids = {e["pid"] for e in effects}
            ledger.check(len(pids) == 1 and effects[0]["event"] == "enter" and effects[-1]["event"] == "exit",
                         f"never two inside at once: {[(e['event'], e['pid']) for e in effects]}")
            for inv in invocations:
                check_invocation_secrets(ledger, inv)
            if runs:
                name = f"runs on {runs[0]['host']}"
                ledger.figure(name, int(ledger.figures.get(name, 0)) + 1)
        ledger.rounds = budget.done


# ---------------------------------------------------------------- the holder vanishes mid-batch

def in_open_transaction(kind: str, admin_url: str, address: str) -> bool:
    """Whether the server sees a session from `address` idle inside a transaction (a batch sleeping)."""
    from sqlalchemy import text

    eng = checker_engine(admin_url)
    if kind == "postgres":
        sql = ("SELECT count(*) FROM pg_stat_activity WHERE client_addr = CAST(:a AS inet) "
               "AND state = 'idle in transaction'")
    else:
        sql = ("SELECT count(*) FROM information_schema.innodb_trx t JOIN information_schema.processlist p "
               "ON p.id = t.trx_mysql_thread_id WHERE p.host LIKE CONCAT(:a, ':%') AND p.command = 'Sleep'")
    try:
        with eng.connect() as conn:
            return bool(conn.execute(text(sql), {"a": address}).scalar())
    finally:
        eng.dispose()


def partition(report: Report, server: PrivateServer, lock: str, net: Network, tmp: Path, bound: float,
              retry_time: float, cuts: int) -> None:
    """`cuts` times, each on a fresh database: the holder cut off, the others taking over."""
    with report.scenario(f"holder cut off mid-batch, lock {lock}", server.kind) as ledger:
        ledger.figure("bound s", bound)
        for r in range(cuts):
            ledger.rounds = r + 1
            with server.database(SECRETS["database"]) as url:
                cut_once(ledger, server, lock, on_host_net(url, net), net, tmp / f"cut-{lock}-{r}", bound, retry_time)


def cut_once(ledger: Ledger, server: PrivateServer, lock: str, url: str, net: Network, tmp: Path, bound: float,
             retry_time: float) -> None:
    kind = server.kind
    holder, takers = net.hosts[0], net.hosts[1:]
    long_run = config(lock, bound, batches=100_000, hold=HOLD, retry_time=retry_time)
    short_run = config(lock, bound, batches=2, hold=0.1, retry_time=retry_time)
    spaces = spaces_for(tmp, url, net, f"cut-{lock}", [long_run] + [short_run] * len(takers))
    first = fork(spaces[0], JOB, "--json", enter=holder.enter)
    ready = time.monotonic() + 60
    while not (sum(1 for e in side_rows(url) if e["event"] == "batch") >= 2
               and in_open_transaction(kind, server.url, holder.address)):
        if time.monotonic() > ready or first.poll() is not None:
            ledger.check(False, f"the holder never held a batch open: {first.stderr[-400:]}")
            first.wait(5)
            return
        time.sleep(0.02)
    holder.cut()
    cut_at, cut_wall = time.monotonic(), datetime.now(timezone.utc).replace(tzinfo=None)
    ledger.fault("holder's link cut inside a batch")
    committed = [e for e in side_rows(url) if e["pid"] == first.pid]
    try:
        taken = take_over(ledger, spaces[1:], takers, first, cut_at, bound)
        holder_exit = first.wait(timeout=max(0.0, cut_at + 3 * bound + 60 - time.monotonic()))
    finally:
        first.wait(1)
        holder.restore()
    exited = first.ended - cut_at if first.ended else float("inf")
    judge(ledger, url, first, committed, cut_wall, taken, holder_exit, exited, bound)


def take_over(ledger: Ledger, spaces: list[Workspace], takers: list[Host], holder: Invocation, cut_at: float,
              bound: float) -> float | None:
    """Every TICK each taker host starts the job (one invocation at a time per host) until one succeeds:
    seconds from the cut to that run's end, None if none did within three bounds."""
    running: dict[int, Invocation | None] = {i: None for i in range(len(takers))}
    next_start = {i: cut_at for i in range(len(takers))}
    started: list[Invocation] = []
    deadline = cut_at + 3 * bound + 30
    done_at = None
    while done_at is None and time.monotonic() < deadline:
        for i, (ws, host) in enumerate(zip(spaces, takers)):
            inv = running[i]
            if (inv is not None and inv.poll() is None) or time.monotonic() < next_start[i]:
                continue
            if inv is not None and status_of(inv) == "succeeded":
                done_at = inv.ended - cut_at
                break
            running[i] = fork(ws, JOB, "--json", enter=host.enter)
            next_start[i] = time.monotonic() + TICK
            started.append(running[i])
        holder.poll()
        time.sleep(0.02)
    wait_all(started, timeout=30)
    for inv in started:
        if done_at is None and status_of(inv) == "succeeded":
            done_at = inv.ended - cut_at
        check_invocation_secrets(ledger, inv)
        ledger.check(inv.code in (0, 75), f"a taker exited {inv.code}: {inv.stderr[-300:]}")
    ledger.fault("taker invocations", len(started))
    return done_at


def judge(ledger: Ledger, url: str, holder: Invocation, committed: list[dict],
          cut_wall: datetime, taken: float | None, holder_exit: int, exited: float, bound: float) -> None:
    runs = [r for r in history(url) if r["job_name"] == JOB]
    mine = [r for r in runs if r["pid"] == holder.pid]
    succeeded = [r for r in runs if r["status"] == "succeeded"]
    ledger.check(taken is not None and taken <= bound + SLACK,
                 f"another host completed the job {taken} s after the cut (bound {bound:g} s + {SLACK:g} s)")
    worst(ledger, "taker done s after the cut (worst)", taken if taken is not None else float("inf"))
    if succeeded:
        worst(ledger, "taker had the lock s after the cut (worst)",
              (succeeded[0]["started_at"].replace(tzinfo=None) - cut_wall).total_seconds())
    ledger.check(len(succeeded) == 1 and all(r["pid"] != holder.pid for r in succeeded),
                 f"exactly one success, not the holder's: {[(r['status'], r['host'], r['pid']) for r in runs]}")
    after = [e for e in side_rows(url) if e["pid"] == holder.pid]
    ledger.check(after == committed, f"the holder committed {len(after) - len(committed)} rows after the cut")
    batches = sum(1 for e in committed if e["event"] == "batch")
    worst(ledger, "holder's committed batches (most)", batches)
    ledger.check(len(mine) == 1 and mine[0]["status"] in ("failed", "abandoned"),
                 f"the holder's run ended {[r['status'] for r in mine]}, not failed/abandoned")
    if mine:
        counts = json.loads(mine[0]["counts"] or "{}")
        name = f"holder's runs {mine[0]['status']}"
        ledger.figure(name, int(ledger.figures.get(name, 0)) + 1)
        ledger.check(counts.get("batches", 0) == batches,
                     f"the holder's run records {counts.get('batches', 0)} batches, it committed {batches}")
    ledger.check(holder_exit in (75, 1) and exited <= bound + SLACK,
                 f"the holder exited {holder_exit} {exited:.1f} s after the cut (bound {bound:g} s): "
                 f"{holder.stderr[-400:]}")
    codes = {c for c in str(ledger.figures.get("holder exit codes", "")).split(", ") if c} | {str(holder_exit)}
    ledger.figure("holder exit codes", ", ".join(sorted(codes)))
    worst(ledger, "holder exited s after the cut (worst)", exited)


# ---------------------------------------------------------------- no route, clock skew

def no_route(report: Report, kind: str, url: str, net: Network, tmp: Path, retry_time: float) -> None:
    host = net.hosts[-1]
    with report.scenario("host with no route to the database", kind) as ledger:
        ledger.rounds = 1
        text = config(SESSION_LOCK[kind], 60, batches=1, hold=0, retry_time=retry_time)
        ws = spaces_for(tmp, url, net, "no-route", [text])[0]
        host.unroute()
        try:
            inv = fork(ws, JOB, enter=host.enter)
            code = inv.wait(timeout=retry_time + 60)
        finally:
            host.reroute()
        ledger.fault("routes removed")
        check_invocation_secrets(ledger, inv)
        ledger.check(code == 75, f"no route: exit {code}, not 75: {inv.stderr[-400:]}")
        check_error_line(ledger, inv, quiet=False, what="no route")
        tries = retry_lines(inv.stderr)
        ledger.check(len(tries) >= 2, f"no route: {len(tries)} attempts logged")
        ledger.figure("attempts", len(tries))
        worst(ledger, "exit s", inv.ended - inv.started)


def skewed(host: Host, offset: timedelta) -> Callable[[], None]:
    def enter() -> None:
        host.enter()
        if offset:
            import time_machine

            time_machine.travel(datetime.now(timezone.utc) + offset, tick=True).start()
    return enter


def clock_skew(report: Report, kind: str, url: str, net: Network, tmp: Path, bound: float, rounds: int) -> None:
    """Each host holds the lease once while the two others, one of them 10 minutes off, try to take it
    (with --force: straight to the lock) until a few batches before the holder's end."""
    offsets = (timedelta(0), SKEW, -SKEW)
    ttl = min(max(bound / 5, 2), 10)
    batches = int(2.5 * ttl / HOLD)
    with report.scenario("clock skew +-10 min, lock lease", kind) as ledger:
        text = config("lease", bound, batches=batches, hold=HOLD, retry_time=30, ttl=ttl)
        spaces = spaces_for(tmp, url, net, "skew", [text] * len(net.hosts))
        for r, holder in enumerate(net.hosts[:rounds]):
            ledger.rounds = r + 1
            before = max([e["id"] for e in side_rows(url)], default=0)
            first = fork(spaces[r], JOB, "--json", "--force", enter=skewed(holder, offsets[r]))
            tries: list[Invocation] = []
            while first.poll() is None:
                mine = [e for e in side_rows(url) if e["pid"] == first.pid]
                if mine and sum(1 for e in mine if e["event"] == "batch") < batches - 4:
                    for i, host in enumerate(net.hosts):
                        if i != r:
                            tries.append(fork(spaces[i], JOB, "--json", "--force", enter=skewed(host, offsets[i])))
                time.sleep(TICK / 2)
            wait_all(tries, timeout=60)
            ledger.fault("invocations on other hosts while one held the lease", len(tries))
            effects = [e for e in side_rows(url) if e["id"] > before]
            ledger.check(first.code == 0 and status_of(first) == "succeeded",
                         f"the holder ({offsets[r]}) exited {first.code}: {first.stderr[-300:]}")
            left = max((e["id"] for e in effects if e["pid"] == first.pid and e["event"] == "exit"), default=0)
            early = sorted({e["pid"] for e in effects if e["pid"] != first.pid and e["id"] < left})
            ledger.check(left and not early, f"{early} entered while {holder.name} ({offsets[r]}) held the lease")
            late = [inv for inv in tries if status_of(inv) != "locked"]
            ledger.check(len(tries) >= 2 and all(status_of(inv) == "succeeded" for inv in late),
                         f"takers ended {[status_of(inv) for inv in late]}, neither locked nor after the holder")
            ledger.figure("took it once the holder had left", int(ledger.figures.get("took it once the holder had left",
                                                                                      0)) + len(late))
            ledger.figure(f"refused while {holder.name} ({'+-'[offsets[r] < timedelta(0)] if offsets[r] else ''}"
                          f"{abs(offsets[r].total_seconds()) / 60:g} min) held it", len(tries) - len(late))


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__.splitlines()[0], rounds=20, seconds=1800, backends=("postgres", "mariadb"))
    parser.add_argument("--bound", type=float, default=60.0,
                        help="[locks] host_loss_bound in seconds (default 60, the default setting)")
    parser.add_argument("--retry-time", type=float, default=30.0, help="[retry] max_time in seconds")
    parser.add_argument("--scenarios", default="windows,partition,no-route,skew")
    parser.add_argument("--cuts", type=int, default=3, help="holders cut off per lock backend (default 3)")
    parser.add_argument("--skew-backends", default="postgres,mariadb", help="where the clock skew scenario runs")
    args = parser.parse_args(argv)
    rng = random.Random(seed_from(args))
    report = Report("hosts", "Hosts that vanish: three hosts in network namespaces, one database server")
    why = unavailable()
    scenarios = {s.strip() for s in args.scenarios.split(",")}
    kinds = [b.strip() for b in args.backends.split(",") if b.strip()]
    if why or any(server_unavailable(k) for k in kinds):
        reason = why or "; ".join(filter(None, (server_unavailable(k) for k in kinds)))
        print(f"  skipped: {reason}", flush=True)
        with report.scenario("network namespaces", "-") as ledger:
            ledger.check(not _ci(), f"cannot run under CI=true: {reason}")
        return report.finish()
    preload()
    budget = Budget(len(kinds), args.max_seconds)
    with hosts(3) as net, tempfile.TemporaryDirectory(prefix="cw-hosts-") as folder:
        tmp = Path(folder)
        for i, kind in enumerate(kinds):
            share = budget.split(len(kinds) - i)
            with private_server(kind, also_on=net.gateway) as server:
                for database_lock in [c for c in COMBOS if c[0] == kind]:
                    lock = database_lock[1]
                    with server.database(SECRETS["database"]) as url:
                        url = on_host_net(url, net)
                        if "windows" in scenarios:
                            windows(report, kind, lock, url, net, tmp, args.rounds, share / 4, rng)
                    if "partition" in scenarios:
                        partition(report, server, lock, net, tmp, args.bound, args.retry_time, args.cuts)
                with server.database(SECRETS["database"]) as url:
                    if "no-route" in scenarios:
                        no_route(report, kind, on_host_net(url, net), net, tmp, args.retry_time)
                    if "skew" in scenarios and kind in args.skew_backends.split(","):
                        clock_skew(report, kind, on_host_net(url, net), net, tmp, args.bound, args.rounds)
    return report.finish()


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


if __name__ == "__main__":
    sys.exit(main())
