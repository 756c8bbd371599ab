"""ip-anonymization on N users (default 1,000,000), half past the cutoff, against one raw UPDATE.

For each data layout (login times scattered over the table, or users stored in last-login order) and each
database (SQLite in WAL mode, PostgreSQL when reachable) the users are loaded once into a master
copy; each measured run gets its own fresh copy of it (a file copy for SQLite, CREATE DATABASE ... TEMPLATE
for PostgreSQL), so the job and the raw statement change the very same data:

  raw  UPDATE users SET last_login_ip = NULL WHERE last_login_at <= :cutoff AND last_login_ip IS NOT NULL,
       one statement and one commit, timed around the statement in a small child process;
  job  `cronwarden ip-anonymization --force --json` as a whole process (start-up, due check, lock and the
       tracking rows included), with its own run duration, transaction count and longest transaction
       taken from its --json report.

Printed: totals, the ratios job/raw (whole process and run duration), the longest transaction, the peak
RSS of each process. Aims: job run within 2x raw, no transaction longer than 0.1 s.

    /work/venv/bin/python benchmarks/ip_anonymization.py [--users 1000000] [--batch-sizes 5000,10000]
        [--rounds 1] [--layouts scattered,clustered] [--skip-postgres] [--skip-sqlite] [--python-m]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PG_ADMIN_URL,
    bench_env,
    cronwarden_argv,
    machine,
    postgres_version,
    run,
    timed_child,
)

RETENTION_DAYS = 90
SPAN_SECONDS = 2 * RETENTION_DAYS * 86400
LAYOUTS = {"scattered": 7919, "clustered": 1}
"""User i last logged in (i * k mod N) steps ago: k = 7919 scatters login times over the table's pages (users
log in whenever they like); k = 1 stores users in last-login order (the friendliest case for an index range)."""
AIM_RATIO = 2.0
AIM_TRANSACTION = 0.1

RAW_SQLITE = """\
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("PRAGMA synchronous=NORMAL")
started = time.perf_counter()
conn.execute("BEGIN IMMEDIATE")
n = conn.execute("UPDATE users SET last_login_ip = NULL WHERE last_login_at <= ? AND last_login_ip IS NOT NULL",
                 (sys.argv[2],)).rowcount
conn.execute("COMMIT")
print(n, time.perf_counter() - started)
"""

RAW_POSTGRES = """\
import psycopg, sys, time
from datetime import datetime
with psycopg.connect(sys.argv[1]) as conn:
    started = time.perf_counter()
    n = conn.execute("UPDATE users SET last_login_ip = NULL WHERE last_login_at <= %s AND last_login_ip IS NOT NULL",
                     (datetime.fromisoformat(sys.argv[2]),)).rowcount
    conn.commit()
    print(n, time.perf_counter() - started)
"""


def _cutoff() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(days=RETENTION_DAYS)


def load_sqlite(db: Path, users: int, scatter: int, cw: list[str], env: dict[str, str], work: Path) -> None:
    run([*cw, "db", "upgrade", "--app-tables"], env=env, cwd=work)
    now = int(datetime.now(timezone.utc).timestamp())
    step_ms = SPAN_SECONDS * 1000 // users
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("BEGIN")
    conn.execute(
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?) "
        "INSERT INTO users (username, email, password_hash, is_admin, last_login_ip, last_login_at, created_at) "
        "SELECT 'user' || i, 'user' || i || '@example.com', 'x', 0, "
        "'10.' || (i / 65536 % 256) || '.' || (i / 256 % 256) || '.' || (i % 256), "
        "strftime('%Y-%m-%d %H:%M:%S', ? - (i * ? % ?) * ? / 1000, 'unixepoch') || '.000000', "
        "strftime('%Y-%m-%d %H:%M:%S', ?, 'unixepoch') || '.000000' FROM s",
        (users, now, scatter, users, step_ms, now - 400 * 86400))
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def load_postgres(url: str, users: int, scatter: int, cw: list[str], env: dict[str, str], work: Path) -> None:
    import psycopg

    run([*cw, "db", "upgrade", "--app-tables"], env=env, cwd=work)
    step = timedelta(milliseconds=SPAN_SECONDS * 1000 // users)
    now = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (username, email, password_hash, is_admin, last_login_ip, last_login_at, created_at) "
            "SELECT 'user' || i, 'user' || i || '@example.com', 'x', false, "
            "'10.' || (i / 65536 %% 256) || '.' || (i / 256 %% 256) || '.' || (i %% 256), "
            "%s - (i::bigint * %s %% %s) * %s, %s FROM generate_series(1, %s) AS i",
            (now, scatter, users, step, now - timedelta(days=400), users))
        conn.execute("VACUUM ANALYZE users")


def job_run(cw: list[str], env: dict[str, str], work: Path, batch_size: int | None) -> dict:
    argv = [*cw, "ip-anonymization", "--force", "--json"]
    if batch_size is not None:
        argv += ["--batch-size", str(batch_size)]
    wall, rss, result = timed_child(argv, env=env, cwd=work)
    if result.returncode != 0:
        raise SystemExit(f"cronwarden exited {result.returncode}: {result.stderr}{result.stdout}")
    report = json.loads(result.stdout)
    return {"wall": wall, "rss": rss, "run": report["duration_seconds"], "n": report["counts"]["anonymized"],
            "transactions": report["transactions"], "longest": report["longest_transaction_seconds"]}


def raw_run(script: Path, target: str, cutoff: str, work: Path) -> dict:
    wall, rss, result = timed_child([sys.executable, str(script), target, cutoff], cwd=work)
    if result.returncode != 0:
        raise SystemExit(f"raw UPDATE failed: {result.stderr}")
    n, seconds = result.stdout.split()
    return {"wall": wall, "rss": rss, "run": float(seconds), "n": int(n)}


def bench_sqlite(args: argparse.Namespace, layout: str, cw: list[str], work: Path) -> list[tuple[str, dict]]:
    master = work / "master.db"
    load_sqlite(master, args.users, LAYOUTS[layout], cw, bench_env(work, f"sqlite:///{master}"), work)
    script = work / "raw_sqlite.py"
    script.write_text(RAW_SQLITE)
    results = []
    for round_no in range(args.rounds):
        copy = work / f"raw-{round_no}.db"
        shutil.copyfile(master, copy)
        results.append(("raw UPDATE", raw_run(script, str(copy), _cutoff().isoformat(" "), work)))
        copy.unlink()
        for size in args.batch_sizes:
            copy = work / f"job-{round_no}-{size}.db"
            shutil.copyfile(master, copy)
            env = bench_env(work, f"sqlite:///{copy}")
            results.append((f"job batch_size={size or 'default'}", job_run(cw, env, work, size)))
            copy.unlink()
            for extra in copy.parent.glob(copy.name + "-*"):
                extra.unlink()
    master.unlink()
    return results


def bench_postgres(args: argparse.Namespace, layout: str, cw: list[str], work: Path) -> list[tuple[str, dict]]:
    import psycopg

    base = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    prefix = f"cw_bench_{uuid.uuid4().hex[:8]}"
    created: list[str] = []

    def url_of(name: str) -> str:
        return base.rsplit("/", 1)[0] + "/" + name

    def new_db(name: str, template: str | None = None) -> str:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
        created.append(name)
        return url_of(name)

    def drop(name: str) -> None:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        created.remove(name)

    script = work / "raw_postgres.py"
    script.write_text(RAW_POSTGRES)
    results = []
    try:
        master = f"{prefix}_master"
        master_url = new_db(master)
        load_postgres(master_url, args.users, LAYOUTS[layout], cw, bench_env(work, master_url), work)
        for round_no in range(args.rounds):
            name = f"{prefix}_raw{round_no}"
            url = new_db(name, master)
            results.append(("raw UPDATE", raw_run(script, url, _cutoff().isoformat(), work)))
            drop(name)
            for size in args.batch_sizes:
                name = f"{prefix}_job{round_no}_{size or 0}"
                url = new_db(name, master)
                results.append((f"job batch_size={size or 'default'}",
                                job_run(cw, bench_env(work, url), work, size)))
                drop(name)
    finally:
        for name in list(created):
            drop(name)
    return results


def report(title: str, results: list[tuple[str, dict]]) -> None:
    print(f"\n{title}")
    print(f"  {'what':26s} {'rows':>8s} {'process':>9s} {'run':>8s} {'txns':>5s} {'longest txn':>11s} "
          f"{'peak RSS':>9s}")
    for name, r in results:
        txns = str(r.get("transactions", 1))
        longest = f"{r['longest']:.3f} s" if "longest" in r else f"{r['run']:.3f} s"
        print(f"  {name:26s} {r['n']:8d} {r['wall']:7.2f} s {r['run']:6.2f} s {txns:>5s} {longest:>11s} "
              f"{r['rss'] / 1024:6.0f} MiB")
    raws = [r for name, r in results if name == "raw UPDATE"]
    raw_run_s = sum(r["run"] for r in raws) / len(raws)
    raw_wall = sum(r["wall"] for r in raws) / len(raws)
    for name in dict.fromkeys(n for n, _ in results if n != "raw UPDATE"):
        jobs = [r for n, r in results if n == name]
        run_s = sum(r["run"] for r in jobs) / len(jobs)
        wall = sum(r["wall"] for r in jobs) / len(jobs)
        longest = max(r["longest"] for r in jobs)
        ratio = run_s / raw_run_s
        print(f"  {name}: run/raw statement {ratio:.2f}x, process/raw process {wall / raw_wall:.2f}x; "
              f"aim <= {AIM_RATIO}x: {'met' if ratio <= AIM_RATIO else 'MISSED'}; longest transaction "
              f"{longest * 1000:.0f} ms, aim <= {AIM_TRANSACTION * 1000:.0f} ms: "
              f"{'met' if longest <= AIM_TRANSACTION else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000, help="users in the table (default 1,000,000)")
    parser.add_argument("--batch-sizes", default="",
                        help="comma-separated batch sizes to run the job with (default: the job's default)")
    parser.add_argument("--rounds", type=int, default=1, help="fresh copies measured per variant (default 1)")
    parser.add_argument("--layouts", default="scattered,clustered",
                        help="comma-separated data layouts: scattered (login times spread over the table's pages), "
                             "clustered (users stored in last-login order); default both")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--python-m", action="store_true", help="run `python -m cli` instead of the console script")
    args = parser.parse_args()
    args.batch_sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()] or [None]
    cw = cronwarden_argv(args.python_m)

    print(f"machine: {machine()}")
    print(f"{args.users:,} users, last logins spread evenly over {2 * RETENTION_DAYS} days "
          f"(half past the {RETENTION_DAYS}-day cutoff); every user has an IP")
    layouts = [name.strip() for name in args.layouts.split(",") if name.strip()]
    print("process = the whole child process (wall); run = the job's run duration from --json, "
          "or the raw statement + commit")
    with tempfile.TemporaryDirectory(prefix="cw-bench-ip-") as tmp:
        work = Path(tmp)
        version = None if args.skip_postgres else postgres_version()
        for layout in layouts:
            if not args.skip_sqlite:
                report(f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=NORMAL), {layout}",
                       bench_sqlite(args, layout, cw, work))
            if version:
                report(f"PostgreSQL {version}, {layout}", bench_postgres(args, layout, cw, work))
        if not version and not args.skip_postgres:
            print("\nPostgreSQL: not reachable, skipped")


if __name__ == "__main__":
    main()
