"""Jobs per second that `cronwarden work` processes drain from PostgreSQL, for a no-op job.

For each worker count: a fresh database, N no-op jobs inserted in one
statement (then ANALYZE, as autovacuum would do in a steady state), then that
many `work` processes started at once. Reported: the drain window (first
claim to last recorded outcome, read from the queue rows themselves) and the
whole wall time including process start-up. With --pgqueuer PYTHON (a Python
that has `pgqueuer[asyncpg]` installed), the same number of no-op jobs is
drained by that many pgqueuer consumer processes from the same server, side
by side (their window: first to last execution, as the consumers saw it).

Aim: at least 1,000 jobs/s with 4 workers, no slower than pgqueuer.

    /work/venv/bin/python benchmarks/queue_drain.py                       # 20,000 jobs, 1 and 4 workers
    /work/venv/bin/python benchmarks/queue_drain.py --jobs 10000 --pgqueuer /tmp/pgq-venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import PG_ADMIN_URL, REPO, bench_env, machine, postgres_version

PGQ_CONSUMER = """\
import asyncio, json, sys, time
from datetime import timedelta

import asyncpg
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job

DSN, BATCH = sys.argv[1], int(sys.argv[2])
seen = {"first": None, "last": None, "count": 0}


async def consume() -> None:
    conn = await asyncpg.connect(DSN)
    pgq = PgQueuer(AsyncpgDriver(conn))

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        now = time.time()
        seen["first"] = seen["first"] or now
        seen["last"] = now
        seen["count"] += 1

    async def watch() -> None:
        probe = await asyncpg.connect(DSN)
        while await probe.fetchval("SELECT count(*) FROM pgqueuer") > 0:
            await asyncio.sleep(0.05)
        await probe.close()
        pgq.shutdown.set()

    watcher = asyncio.create_task(watch())
    await pgq.run(batch_size=BATCH, dequeue_timeout=timedelta(seconds=0.1))
    await watcher
    await conn.close()


asyncio.run(consume())
print(json.dumps(seen))
"""

PGQ_SETUP = """\
import asyncio, sys
import asyncpg
from pgqueuer.db import AsyncpgDriver
from pgqueuer.queries import Queries

DSN, TOTAL = sys.argv[1], int(sys.argv[2])


async def setup() -> None:
    conn = await asyncpg.connect(DSN)
    queries = Queries(AsyncpgDriver(conn))
    await queries.install()
    for start in range(0, TOTAL, 5000):
        n = min(5000, TOTAL - start)
        await queries.enqueue(["noop"] * n, [None] * n, [0] * n)
    await conn.execute("ANALYZE pgqueuer")
    await conn.close()


asyncio.run(setup())
"""


def _admin():
    from sqlalchemy import create_engine

    return create_engine(PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")


def fresh_database() -> tuple[str, str]:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    name = f"cwq_{uuid.uuid4().hex[:10]}"
    admin = _admin()
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return name, make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(name: str) -> None:
    from sqlalchemy import text

    admin = _admin()
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


def cronwarden_run(jobs: int, workers: int, batch: int) -> dict[str, float]:
    from sqlalchemy import func, insert, select

    from jobs import clock
    from jobs.db import make_engine
    from jobs.queue import models as qm
    from jobs.schema import upgrade

    name, url = fresh_database()
    try:
        engine = make_engine(url)
        upgrade(engine)
        qm.create(engine)
        now = clock.utcnow()
        with engine.begin() as conn:
            conn.execute(insert(qm.queued_jobs), [
                dict(job_name="test-noop", args="{}", status="enqueued", run_at=now, attempts=0, max_attempts=4,
                     retry_delays="[60, 300, 900]", created_at=now) for _ in range(jobs)])
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE queued_jobs")
        with tempfile.TemporaryDirectory() as tmp:
            env = bench_env(Path(tmp), url, CRONWARDEN_TASK_MODULES="tests.queue.tasks", PYTHONPATH=str(REPO))
            env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "cronwarden-bench-pycache")
            argv = [sys.executable, "-m", "cli", "--quiet", "work", "--json", "--max-seconds", "600",
                    "--batch-size", str(batch)]
            started = time.perf_counter()
            procs = [subprocess.Popen(argv, env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True) for _ in range(workers)]
            outs = [p.communicate() for p in procs]
            wall = time.perf_counter() - started
        if any(p.returncode for p in procs):
            raise SystemExit(f"a worker failed: {[err for _, err in outs]}")
        done = sum(json.loads(out)["succeeded"] for out, _ in outs)
        with engine.connect() as conn:
            first, last = conn.execute(select(func.min(qm.queued_jobs.c.started_at),
                                              func.max(qm.queued_jobs.c.finished_at))).one()
        engine.dispose()
    finally:
        drop_database(name)
    return {"done": done, "wall": wall, "window": (last - first).total_seconds()}


def pgqueuer_run(python: str, jobs: int, workers: int, batch: int) -> dict[str, float]:
    name, url = fresh_database()
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    try:
        subprocess.run([python, "-c", PGQ_SETUP, dsn, str(jobs)], check=True, capture_output=True, text=True,
                       cwd=tempfile.gettempdir())
        started = time.perf_counter()
        procs = [subprocess.Popen([python, "-c", PGQ_CONSUMER, dsn, str(batch)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=tempfile.gettempdir())
                 for _ in range(workers)]
        outs = [p.communicate() for p in procs]
        wall = time.perf_counter() - started
    finally:
        drop_database(name)
    if any(p.returncode for p in procs):
        raise SystemExit(f"a pgqueuer consumer failed: {[err[-2000:] for _, err in outs]}")
    seen = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    active = [s for s in seen if s["count"]]
    window = max(s["last"] for s in active) - min(s["first"] for s in active)
    return {"done": sum(s["count"] for s in seen), "wall": wall, "window": window}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workers", default="1,4")
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="runs per line; the median is shown")
    parser.add_argument("--pgqueuer", metavar="PYTHON", help="a Python with pgqueuer[asyncpg] installed")
    a = parser.parse_args()
    version = postgres_version()
    if version is None:
        raise SystemExit("PostgreSQL is not reachable at " + PG_ADMIN_URL)
    print(f"machine: {machine()}, PostgreSQL {version}")
    print(f"{a.jobs} no-op jobs, batch size {a.batch_size}, median of {a.repeat} runs (min-max of jobs/s)")
    print(f"{'queue':<11} {'workers':>7} {'drained':>8} {'window s':>9} {'jobs/s':>8} {'range':>12} {'wall s':>7} "
          f"{'jobs/s wall':>11}")
    for workers in (int(w) for w in a.workers.split(",")):
        runs = [("cronwarden", lambda workers=workers: cronwarden_run(a.jobs, workers, a.batch_size))]
        if a.pgqueuer:
            runs.append(("pgqueuer", lambda workers=workers: pgqueuer_run(a.pgqueuer, a.jobs, workers, a.batch_size)))
        results: dict[str, list[dict[str, float]]] = {label: [] for label, _ in runs}
        for _ in range(a.repeat):
            for label, fn in runs:
                results[label].append(fn())
        for label, rs in results.items():
            ordered = sorted(rs, key=lambda r: r["done"] / r["window"])
            mid = ordered[len(ordered) // 2]
            low, high = (ordered[i]["done"] / ordered[i]["window"] for i in (0, -1))
            print(f"{label:<11} {workers:>7} {mid['done']:>8} {mid['window']:>9.2f} "
                  f"{mid['done'] / mid['window']:>8.0f} {f'{low:.0f}-{high:.0f}':>12} {mid['wall']:>7.2f} "
                  f"{mid['done'] / mid['wall']:>11.0f}", flush=True)


if __name__ == "__main__":
    main()
