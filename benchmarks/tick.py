"""What an invocation that does nothing costs: whole processes, side by side, interleaved, medians of --runs.

Measured in the same rounds (the order rotated each round):
  - a not-due `cronwarden refresh-token-cleanup` on SQLite, PostgreSQL and MariaDB, against the floor of
    each: `python -c` importing the driver, connecting and running `select 1`;
  - a locked loser (the job due, its lock held by this script: SQLite's lock file, PostgreSQL's advisory
    lock), against the not-due tick on the same database;
  - `cronwarden --help`;
  - with --before DIR (a source tree of an earlier version, e.g. `git archive <commit> | tar -x -C DIR`):
    the same commands run from it, as the "before" column;
  - with --django-venv DIR (a venv with django and django-cron): django-cron's `runcrons` on SQLite with
    its one job not due.
Then 15 losers started together while a winner works (this script holds the job's lock): when each exits,
after the moment they were started (median and slowest), on SQLite and PostgreSQL, --stampedes rounds.
And a due run's fixed cost on SQLite: process start to the run's start, the run's end to the exit.

    /work/main/.venv/bin/python benchmarks/tick.py --python-m [--runs 20] [--before /tmp/cw-before]
        [--django-venv /tmp/djcron-venv]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import bench_env, cronwarden_argv, machine, run, spread, timed

JOB = "refresh-token-cleanup"
MYSQL_ADMIN_URL = os.environ.get("CRONWARDEN_BENCH_MYSQL", "mysql://root@127.0.0.1:3306/test")
FLOORS = {
    "sqlite": "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('select 1').fetchone()",
    "postgres": "import psycopg, sys; c = psycopg.connect(sys.argv[1]); c.execute('select 1').fetchone()",
    "mariadb": ("import pymysql, sys; c = pymysql.connect(host='127.0.0.1', user='root', database=sys.argv[1]); "
                "k = c.cursor(); k.execute('select 1'); k.fetchone()"),
}


def _database(kind: str, name: str) -> str:
    """A fresh database on the test server; its URL."""
    import psycopg
    import pymysql

    if kind == "postgres":
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:5432/{name}"
    conn = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()
    return f"mysql://root@127.0.0.1:3306/{name}"


def _workspace(work: Path, kind: str, name: str, cw: list[str], *, tick: bool) -> tuple[dict, str]:
    """A workspace with the tool's and the application's tables; the job run once when `tick` (not due)."""
    folder = work / name
    folder.mkdir()
    url = f"sqlite:///{folder / 'cronwarden.db'}" if kind == "sqlite" else _database(kind, f"cwtick_{name}")
    env = bench_env(folder, url)
    run([*cw, "db", "upgrade", "--app-tables"], env=env, cwd=folder)
    if tick:
        run([*cw, JOB], env=env, cwd=folder)
        if '"not_due"' not in run([*cw, JOB, "--json"], env=env, cwd=folder).stdout:
            raise SystemExit(f"{name}: the tick is not a not-due tick")
    return env, url


def _hold(kind: str, env: dict, folder: Path):
    """The job's lock, taken as its backend takes it, held by this process (the working winner)."""
    if kind == "sqlite":
        from jobs.locks.file import FileLockBackend

        return FileLockBackend(Path(env["CRONWARDEN_LOCK_DIR"])).try_acquire(JOB, None)
    import psycopg

    from jobs.locks.postgres import advisory_key

    conn = psycopg.connect(env["CRONWARDEN_DATABASE_URL"], autocommit=True)
    assert conn.execute("SELECT pg_try_advisory_lock(%s)", (advisory_key(JOB),)).fetchone()[0]
    return conn


def _release(kind: str, held) -> None:
    if kind == "sqlite":
        held.release()
    else:
        held.close()


def _django(work: Path, venv: Path) -> tuple[list[str], dict, Path]:
    """A minimal Django project with django-cron and one daily job, run once (so `runcrons` finds it not due)."""
    site = work / "django"
    (site / "proj").mkdir(parents=True)
    (site / "proj" / "__init__.py").write_text("")
    (site / "proj" / "crons.py").write_text(
        "from django_cron import CronJobBase, Schedule\n\n\n"
        "class Cleanup(CronJobBase):\n    schedule = Schedule(run_every_mins=1440)\n    code = 'proj.cleanup'\n\n"
        "    def do(self):\n        return 'ok'\n")
    (site / "proj" / "settings.py").write_text(
        "SECRET_KEY = 'x'\nINSTALLED_APPS = ['django_cron']\nUSE_TZ = True\n"
        f"DATABASES = {{'default': {{'ENGINE': 'django.db.backends.sqlite3', 'NAME': {str(site / 'db.sqlite3')!r}}}}}\n"
        "CRON_CLASSES = ['proj.crons.Cleanup']\nDEFAULT_AUTO_FIELD = 'django.db.models.AutoField'\n")
    (site / "manage.py").write_text(
        "import os, sys\nos.environ.setdefault('DJANGO_SETTINGS_MODULE', 'proj.settings')\n"
        "from django.core.management import execute_from_command_line\nexecute_from_command_line(sys.argv)\n")
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    run([python, "manage.py", "migrate", "-v0"], env=env, cwd=site)
    run([python, "manage.py", "runcrons"], env=env, cwd=site)
    return [python, "manage.py", "runcrons"], env, site


def stampede(cw: list[str], env: dict, folder: Path, n: int = 15) -> list[float]:
    """Start n processes at once; seconds from the start to each one's exit."""
    started = time.perf_counter()
    procs = [subprocess.Popen([*cw, JOB], env=env, cwd=folder, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(n)]
    exits: dict[int, float] = {}
    while len(exits) < n:
        pid, status = os.wait()
        exits[pid] = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"a loser exited {os.waitstatus_to_exitcode(status)}")
    for proc in procs:
        proc.returncode = 0
    return sorted(exits.values())


def due_run(cw: list[str], env: dict, folder: Path, db: Path) -> tuple[float, float]:
    """A due run's fixed cost on SQLite (the tokens table empty): seconds from the process's start to the run's
    start, and from the run's end to the process's exit (the run's own timestamps, from --json)."""
    import json
    import sqlite3
    from datetime import datetime

    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE recurring_job_executions SET schedule_slot_at = '2000-01-01 00:00:00.000000'")
        try:
            conn.execute("DELETE FROM job_slots")  # the slot this day's run claimed (schema version 4)
        except sqlite3.OperationalError:
            pass  # an earlier version's tables
    started = time.time()
    out = subprocess.run([*cw, JOB, "--json"], env=env, cwd=folder, capture_output=True, text=True, check=True)
    ended = time.time()
    report = json.loads(out.stdout)
    if report["status"] != "succeeded":
        raise SystemExit(f"the due run did not run: {out.stdout}")
    return (datetime.fromisoformat(report["started_at"]).timestamp() - started,
            ended - datetime.fromisoformat(report["finished_at"]).timestamp())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="measured runs of each command (default 20)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--stampedes", type=int, default=5, help="rounds of 15 losers per database (default 5)")
    parser.add_argument("--python-m", action="store_true", help="run `python -m cli` instead of the console script")
    parser.add_argument("--before", type=Path, help="source tree of an earlier version, run side by side")
    parser.add_argument("--django-venv", type=Path, help="a venv with django and django-cron installed")
    parser.add_argument("--databases", default="sqlite,postgres,mariadb")
    args = parser.parse_args()
    kinds = args.databases.split(",")
    cw = cronwarden_argv(args.python_m)
    before = [sys.executable, "-m", "cli"] if args.before else None

    with tempfile.TemporaryDirectory(prefix="cw-tick-") as tmp:
        work = Path(tmp)
        commands: dict[str, tuple[list[str], dict, Path]] = {}
        holds = []
        for kind in kinds:
            env, url = _workspace(work, kind, f"{kind}_tick", cw, tick=True)
            commands[f"not-due tick, {kind}"] = ([*cw, JOB], env, work / f"{kind}_tick")
            if before:
                commands[f"not-due tick, {kind}, before"] = ([*before, JOB], {**env, "PYTHONPATH": str(args.before)},
                                                             work / f"{kind}_tick")
            target = url.partition("///")[2] if kind == "sqlite" else (url if kind == "postgres"
                                                                         else url.rsplit("/", 1)[1])
            commands[f"floor, {kind}: python -c + connect + select 1"] = (
                [sys.executable, "-c", FLOORS[kind], target], env, work)
            if kind in ("sqlite", "postgres"):
                env_l, _ = _workspace(work, kind, f"{kind}_locked", cw, tick=False)
                holds.append((kind, _hold(kind, env_l, work / f"{kind}_locked"), env_l))
                commands[f"locked loser, {kind}"] = ([*cw, JOB], env_l, work / f"{kind}_locked")
                if before:
                    commands[f"locked loser, {kind}, before"] = (
                        [*before, JOB], {**env_l, "PYTHONPATH": str(args.before)}, work / f"{kind}_locked")
        commands["cronwarden --help"] = ([*cw, "--help"], commands[f"not-due tick, {kinds[0]}"][1], work)
        if before:
            commands["cronwarden --help, before"] = ([*before, "--help"],
                                                     {**commands[f"not-due tick, {kinds[0]}"][1],
                                                      "PYTHONPATH": str(args.before)}, work)
        if args.django_venv:
            commands["django-cron runcrons, not due (SQLite)"] = _django(work, args.django_venv)

        names = list(commands)
        wall: dict[str, list[float]] = defaultdict(list)
        cpu: dict[str, list[float]] = defaultdict(list)
        for round_no in range(args.warmup + args.runs):
            order = names[round_no % len(names):] + names[:round_no % len(names)]
            for name in order:
                argv, env, cwd = commands[name]
                elapsed, used = timed(argv, env=env, cwd=cwd)
                if round_no >= args.warmup:
                    wall[name].append(elapsed)
                    cpu[name].append(used)

        stampedes: dict[str, list[list[float]]] = defaultdict(list)
        for kind, _, env_l in holds:
            for variant, argv in (("", cw), (", before", before)):
                if argv is None:
                    continue
                env_v = {**env_l, "PYTHONPATH": str(args.before)} if variant else env_l
                for _ in range(args.stampedes):
                    stampedes[f"15 losers, {kind}{variant}"].append(stampede(argv, env_v, work / f"{kind}_locked"))
        for kind, held, _ in holds:
            _release(kind, held)
        due: dict[str, list[tuple[float, float]]] = defaultdict(list)
        if "sqlite" in kinds:
            env_s = commands["not-due tick, sqlite"][1]
            db = Path(env_s["CRONWARDEN_DATABASE_URL"].partition("///")[2])
            for _ in range(args.runs):
                due["due run, sqlite"].append(due_run(cw, env_s, work / "sqlite_tick", db))
                if before:
                    due["due run, sqlite, before"].append(
                        due_run(before, {**env_s, "PYTHONPATH": str(args.before)}, work / "sqlite_tick", db))

    print(f"machine: {machine()}")
    print(f"cronwarden run as: {' '.join(cw)}" + (f"; before: python -m cli from {args.before}" if before else ""))
    print("\nwall time per process (CPU time: user + system):")
    for name in names:
        print(f"  {name:52s} {spread(wall[name])}   CPU {statistics.median(cpu[name]) * 1000:6.1f} ms")
    med = {name: statistics.median(values) for name, values in wall.items()}
    print("\nratios of medians (wall):")
    for kind in kinds:
        floor = med[f"floor, {kind}: python -c + connect + select 1"]
        print(f"  not-due tick / floor, {kind:8s} {med[f'not-due tick, {kind}'] / floor:5.2f}x")
        if f"locked loser, {kind}" in med:
            ratio = med[f"locked loser, {kind}"] / med[f"not-due tick, {kind}"]
            print(f"  locked loser / not-due tick, {kind:8s} {ratio:5.2f}x")
    django = "django-cron runcrons, not due (SQLite)"
    if django in med and "sqlite" in kinds:
        print(f"  not-due tick, sqlite / django-cron runcrons {med['not-due tick, sqlite'] / med[django]:5.2f}x")
    for name, pairs in due.items():
        print(f"\n{name}: process start to run start median {statistics.median(p[0] for p in pairs) * 1000:6.1f} ms, "
              f"run end to exit median {statistics.median(p[1] for p in pairs) * 1000:6.1f} ms (n={len(pairs)})")
    print("\n15 losers started together while a winner holds the lock "
          "(s after the start; per round: median / slowest):")
    for name, rounds in stampedes.items():
        medians = [statistics.median(r) for r in rounds]
        slowest = [max(r) for r in rounds]
        print(f"  {name:30s} median {statistics.median(medians):5.2f} s, slowest {statistics.median(slowest):5.2f} s "
              f"(worst round: {max(slowest):5.2f} s)")


if __name__ == "__main__":
    main()
