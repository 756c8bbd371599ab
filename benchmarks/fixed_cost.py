"""What a process that has work to do costs around the work: a due run and an empty `work`, whole processes.

Measured in interleaved rounds, medians of --runs, wall time and CPU (user + system) per process:
  - a scheduled due run of refresh-token-cleanup on SQLite (an empty tokens table): the process's start to
    the run's start and the run's end to the exit, from the run's own timestamps (--json);
  - a forced run of the same job on PostgreSQL, likewise;
  - `cronwarden --quiet work --json` on an empty queue, SQLite and PostgreSQL: a queue worker's start-up.
With --before DIR (an earlier source tree, `git archive <commit> | tar -x -C DIR`), the same commands run
from it (PYTHONPATH=DIR) in the same rounds.

    /work/main/.venv/bin/python benchmarks/fixed_cost.py --runs 10 [--before /tmp/cw-before]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import PG_ADMIN_URL, REPO, bench_env, machine, postgres_version

JOB = "refresh-token-cleanup"
PG_DATABASE = "cwbench_fixed"


def child(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, float, str]:
    """Start time (epoch), wall and CPU seconds, stdout of one process."""
    started, t0 = time.time(), time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read() if proc.stdout is not None else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} exited {os.waitstatus_to_exitcode(status)}")
    return started, wall, usage.ru_utime + usage.ru_stime, out


def phases(started: float, wall: float, out: str) -> tuple[float, float]:
    """Seconds from the process's start to the run's start, and from the run's end to the exit."""
    report = json.loads(out)
    if report["status"] != "succeeded":
        raise SystemExit(f"the run did not run: {out}")
    return (datetime.fromisoformat(report["started_at"]).timestamp() - started,
            started + wall - datetime.fromisoformat(report["finished_at"]).timestamp())


def _pg_database(admin_url: str) -> str:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {PG_DATABASE}")
    return admin_url.rpartition("/")[0] + "/" + PG_DATABASE


def _drop_pg(admin_url: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--before", metavar="DIR", help="an earlier source tree, run in the same rounds")
    parser.add_argument("--pg", default=PG_ADMIN_URL, help="PostgreSQL admin URL (CREATE DATABASE rights)")
    args = parser.parse_args()
    versions = {"now": str(REPO), **({"before": str(Path(args.before).resolve())} if args.before else {})}
    admin = args.pg.replace("postgresql+psycopg://", "postgresql://")
    pg_version = postgres_version(admin)
    print(f"machine: {machine()}" + (f", PostgreSQL {pg_version}" if pg_version else "")
          + f", load average at the start {os.getloadavg()[0]:.1f}")
    cw = [sys.executable, "-m", "cli"]
    results: dict[str, list[tuple[float, ...]]] = {}
    with tempfile.TemporaryDirectory(prefix="cw-fixed-") as tmp:
        work = Path(tmp)
        sqlite_url = f"sqlite:///{work / 'cronwarden.db'}"
        pg_url = _pg_database(admin) if pg_version else None
        try:
            def env(version: str, url: str) -> dict[str, str]:
                return bench_env(work, url, PYTHONPATH=versions[version])

            for url in filter(None, (sqlite_url, pg_url)):
                subprocess.run([*cw, "db", "upgrade", "--app-tables"], env=env("now", url), cwd=work, check=True,
                               capture_output=True)
            lines = [("due run, sqlite", sqlite_url, [JOB, "--json"]),
                     ("empty work, sqlite", sqlite_url, ["--quiet", "work", "--json"])]
            if pg_url:
                lines += [("forced run, postgresql", pg_url, [JOB, "--force", "--json"]),
                          ("empty work, postgresql", pg_url, ["--quiet", "work", "--json"])]
            for i in range(args.runs + 2):  # the first two rounds fill the bytecode caches
                for version in versions if i % 2 == 0 else reversed(list(versions)):
                    for label, url, line in lines:
                        if label.startswith("due run"):
                            with sqlite3.connect(work / "cronwarden.db") as conn:
                                conn.execute("UPDATE recurring_job_executions "
                                             "SET schedule_slot_at = '2000-01-01 00:00:00.000000'")
                                conn.execute("DELETE FROM job_slots")
                        started, wall, cpu, out = child([*cw, *line], env(version, url), work)
                        before_run, after_run = phases(started, wall, out) if "run" in label else (0.0, 0.0)
                        if i >= 2:
                            results.setdefault(f"{label}, {version}", []).append((wall, cpu, before_run, after_run))
        finally:
            if pg_url:
                _drop_pg(admin)
    print(f"\nmedians of {args.runs} interleaved runs, milliseconds")
    print(f"{'process':34s} {'wall':>6s} {'CPU':>6s} {'start to run':>13s} {'run end to exit':>16s}")
    for label, rows in results.items():
        wall, cpu, before_run, after_run = (statistics.median(column) * 1000 for column in zip(*rows))
        run_phases = f"{before_run:13.0f} {after_run:16.0f}" if " run" in label else ""
        print(f"{label:34s} {wall:6.0f} {cpu:6.0f} {run_phases}")
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
