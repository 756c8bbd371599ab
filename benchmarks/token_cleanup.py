"""refresh-token-cleanup against one raw DELETE, on SQLite (WAL) and PostgreSQL.

For each backend, table size and expired fraction: build the default refresh_tokens
table (index on expires_at) with the expired rows spread over the whole table, copy
it twice, then time on one copy the job as a whole process
(`cronwarden --database-url URL refresh-token-cleanup --force --json`) and on the
other one raw `DELETE FROM refresh_tokens WHERE expires_at < ?` run by a minimal
Python process (connect, delete, commit). Prints the job process, its run (the report's
duration) and the raw statement and process, their ratios, the job's transactions and
longest transaction, and the job process's peak RSS: medians of --reps repetitions
(the longest transaction and the peaks: maxima).

Aims: no transaction longer than 0.25 s; peak memory flat in table size; the job at most
1.5x the raw statement; on SQLite with half the rows expired, faster than it.

    /work/venv/bin/python benchmarks/token_cleanup.py                      # full: 500k and 2M, ~5 min
    /work/venv/bin/python benchmarks/token_cleanup.py --sizes 100000 --backends sqlite --reps 1   # quick
    /work/venv/bin/python benchmarks/token_cleanup.py --sizes 2000000 --layout clustered      # ids in expiry order
    /work/venv/bin/python benchmarks/token_cleanup.py --sizes 1000000 --expired 1 --layout tied  # one expiry for all
    /work/venv/bin/python benchmarks/token_cleanup.py --sizes 2000000 --before /tmp/cw-before   # an older checkout too

--before DIR also runs the job of another checkout (`git archive REV | tar -x -C DIR`, run with
PYTHONPATH=DIR) on a fresh copy in every repetition, in alternating order with the current one, and
prints its process and run beside the current ones: what a change did to the whole process, under
the same load.

Layouts that break value-bounded batches: `tied` (every expired row has one expiry, as after "log
everyone out"), `tie-tail` (nine expired rows in ten share one expiry, the tenth are spread),
`nulls` (a third of the unexpired rows have a NULL expiry, which is never deleted).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import PG_ADMIN_URL, bench_env, cronwarden_argv, machine, postgres_version, timed_child

RETENTION_DAYS = 7
MAX_TRANSACTION = 0.25
MAX_RATIO = 1.5
HASH = 2654435761  # Knuth's multiplicative hash: spreads the expired rows over the whole table
PG_TEMPLATE = "cwbench_template"

RAW_SQLITE = """\
import sqlite3, sys, time
from datetime import datetime, timedelta, timezone
cutoff = (datetime.now(timezone.utc) - timedelta(days={days})).replace(tzinfo=None).isoformat(" ")
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("PRAGMA synchronous=NORMAL")
started = time.perf_counter()
conn.execute("BEGIN IMMEDIATE")
deleted = conn.execute("DELETE FROM refresh_tokens WHERE expires_at < ?", (cutoff,)).rowcount
conn.execute("COMMIT")
print(deleted, time.perf_counter() - started)
conn.close()
"""

RAW_POSTGRES = """\
import sys, time
from datetime import datetime, timedelta, timezone
import psycopg
cutoff = (datetime.now(timezone.utc) - timedelta(days={days})).replace(tzinfo=None)
with psycopg.connect(sys.argv[1]) as conn:
    started = time.perf_counter()
    deleted = conn.execute("DELETE FROM refresh_tokens WHERE expires_at < %s", (cutoff,)).rowcount
    conn.commit()
    print(deleted, time.perf_counter() - started)
"""


@dataclass
class Result:
    backend: str
    size: int
    expired: float
    expected: int
    job_wall: float
    job_run: float
    job_rss_kib: int
    transactions: int
    longest: float
    raw_wall: float
    raw_statement: float
    raw_rss_kib: int
    most_rows: int = 0
    before_wall: float | None = None
    before_run: float | None = None

    @property
    def ratio_process(self) -> float:
        return self.job_wall / self.raw_wall

    @property
    def ratio_strict(self) -> float:
        return self.job_wall / self.raw_statement

    @property
    def ratio_work(self) -> float:
        return self.job_run / self.raw_statement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500000,2000000", help="table sizes, comma-separated")
    parser.add_argument("--expired", default="0.5,0.03", help="expired fractions, comma-separated")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg", default=PG_ADMIN_URL, help="PostgreSQL admin URL (CREATE DATABASE rights)")
    parser.add_argument("--job-option", action="append", default=[], metavar="OPT",
                        help="extra option for the job, e.g. --job-option=--batch-size=5000")
    parser.add_argument("--python-m", action="store_true", help="run `python -m cli` instead of the console script")
    parser.add_argument("--reps", type=int, default=3,
                        help="repetitions per case on fresh copies, raw and job alternating; medians are shown")
    parser.add_argument("--before", metavar="DIR", help="also time the job of the checkout in DIR (PYTHONPATH=DIR), "
                                                        "interleaved with this one")
    parser.add_argument("--layout", choices=("spread", "clustered", "tied", "tie-tail", "nulls"), default="spread",
                        help="expired rows spread over the whole table (default), or the oldest ids, as when "
                             "ids follow creation; tied: every expired row has one expiry; tie-tail: nine in ten "
                             "do, the rest are spread; nulls: a third of the unexpired rows have no expiry")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    fractions = [float(f) for f in args.expired.split(",")]
    backends = args.backends.split(",")
    pg_version = postgres_version(args.pg) if "postgresql" in backends else None
    if "postgresql" in backends and pg_version is None:
        print(f"PostgreSQL at {args.pg} does not answer: skipping it", file=sys.stderr)
        backends.remove("postgresql")

    print(f"machine: {machine()}" + (f", PostgreSQL {pg_version}" if pg_version else ""))
    print(f"job: {' '.join(cronwarden_argv(args.python_m))} --database-url URL refresh-token-cleanup --force --json "
          f"{' '.join(args.job_option)}".rstrip())
    results: list[Result] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cw-cleanup-") as tmp:
        work = Path(tmp)
        (work / "raw_sqlite.py").write_text(RAW_SQLITE.format(days=RETENTION_DAYS))
        (work / "raw_postgres.py").write_text(RAW_POSTGRES.format(days=RETENTION_DAYS))
        warm = argparse.Namespace(**{**vars(args), "reps": 1})
        for backend in backends:  # fills the bytecode cache: the first run of a process imports cold
            (SqliteCase(work, 1000, 0.5, args.layout) if backend == "sqlite" else
             PostgresCase(work, 1000, 0.5, args.layout, args.pg)).measure(warm, quiet=True)
        for backend in backends:
            for size in sizes:
                for fraction in fractions:
                    case = SqliteCase(work, size, fraction, args.layout) if backend == "sqlite" else \
                        PostgresCase(work, size, fraction, args.layout, args.pg)
                    result = case.measure(args)
                    results.append(result)
                    show(result)
    print(f"\ntotal benchmark time {time.perf_counter() - started:.0f} s\n")
    summary(results)


class Case:
    backend = ""

    def __init__(self, work: Path, size: int, fraction: float, layout: str) -> None:
        self.work, self.size, self.fraction = work, size, fraction
        self.expected = 0
        # Which ids get an expiry past the cutoff: spread by a multiplicative hash, or the oldest ones with
        # expiries rising with the id (tokens created in order with one lifetime). Expired rows expire
        # 8 + x days ago, x in [0, 30); the others 6 days ago + y, y in [0, 36) days.
        n_expired = int(fraction * size)
        if layout == "clustered":
            self.expired_sql = f"i <= {n_expired}"
            self.past_sql = f"(2592000 - i * 2592000 / {max(n_expired, 1)})"
            self.ahead_sql = f"((i - {n_expired}) * 3110400 / {max(size - n_expired, 1)})"
        else:
            self.expired_sql = f"(i * {HASH}) % 4294967296 < {int(fraction * 2**32)}"
            self.past_sql = "((i * 40503) % 2592000)"
            self.ahead_sql = "((i * 40503) % 3110400)"
        self.nullable = layout == "nulls"
        if layout == "tied":
            self.past_sql = "0"
        elif layout == "tie-tail":
            self.past_sql = "(CASE WHEN i % 10 = 0 THEN (i * 40503) % 2592000 ELSE 0 END)"
        elif layout == "nulls":
            self.ahead_sql = "(CASE WHEN i % 3 = 0 THEN NULL ELSE (i * 40503) % 3110400 END)"

    def measure(self, args: argparse.Namespace, quiet: bool = False) -> Result:
        """Build once; then per repetition two fresh copies, raw and job in alternating order.

        Returns the median of each figure over the repetitions (the peaks: their maximum).
        """
        t = time.perf_counter()
        self.expected = self.build()
        built = time.perf_counter() - t
        reps: list[Result] = []
        for rep in range(args.reps):
            before = self._before(args) if args.before and rep % 2 == 1 else None
            job_url, raw_target = self.copies()
            if rep % 2 == 0:
                raw_wall, raw_rss, raw_statement = self._raw(raw_target, job_url)
                job_wall, job_rss, report = self._job(args, job_url)
            else:
                job_wall, job_rss, report = self._job(args, job_url)
                raw_wall, raw_rss, raw_statement = self._raw(raw_target, job_url)
            self._check(report)
            if args.before and rep % 2 == 0:
                before = self._before(args)
            reps.append(Result(self.backend, self.size, self.fraction, self.expected, job_wall,
                               report["duration_seconds"], job_rss, report["transactions"],
                               report["longest_transaction_seconds"], raw_wall, raw_statement, raw_rss,
                               report.get("largest_batch_items", 0), *(before or (None, None))))
        self.drop()
        if not quiet:
            print(f"  ({self.backend} {self.size:,} rows, {self.fraction:.0%} expired, {args.layout}: data built in "
                  f"{built:.1f} s; per repetition, job process / raw statement: "
                  f"{', '.join(f'{r.job_wall:.2f}/{r.raw_statement:.2f} s' for r in reps)})", file=sys.stderr)

        def mid(field: str) -> float:
            return statistics.median(getattr(r, field) for r in reps)

        return Result(self.backend, self.size, self.fraction, self.expected, mid("job_wall"), mid("job_run"),
                      max(r.job_rss_kib for r in reps), round(mid("transactions")), max(r.longest for r in reps),
                      mid("raw_wall"), mid("raw_statement"), max(r.raw_rss_kib for r in reps),
                      max(r.most_rows for r in reps), *((mid("before_wall"), mid("before_run")) if args.before
                                                        else (None, None)))

    def _check(self, report: dict) -> None:
        """The job deleted exactly the expired rows of the job's copy; the copies are dropped."""
        left = self.remaining()
        self.drop_copies()
        if report["counts"]["deleted"] != self.expected or left != self.size - self.expected:
            raise SystemExit(f"wrong counts: expected {self.expected}, job deleted {report['counts']}, "
                             f"{left} rows left of {self.size}")

    def _before(self, args: argparse.Namespace) -> tuple[float, float]:
        """The --before checkout's job on a fresh copy: its process and its run."""
        job_url, _ = self.copies()
        wall, _, report = self._job(args, job_url, pythonpath=args.before)
        self._check(report)
        return wall, report["duration_seconds"]

    def _raw(self, target: str, job_url: str) -> tuple[float, int, float]:
        wall, rss, raw = timed_child([sys.executable, str(self.work / self.raw_script), target],
                                     env=bench_env(self.work, job_url), cwd=self.work)
        if raw.returncode != 0:
            raise SystemExit(f"raw DELETE failed: {raw.stderr}")
        deleted, statement = raw.stdout.split()
        if int(deleted) != self.expected:
            raise SystemExit(f"wrong counts: expected {self.expected}, the raw DELETE deleted {deleted}")
        return wall, rss, float(statement)

    def _job(self, args: argparse.Namespace, url: str, pythonpath: str | None = None) -> tuple[float, int, dict]:
        argv = [*cronwarden_argv(args.python_m), "--database-url", url, "refresh-token-cleanup", "--force", "--json",
                *args.job_option]
        env = bench_env(self.work, url, **({"PYTHONPATH": pythonpath} if pythonpath else {}))
        wall, rss, job = timed_child(argv, env=env, cwd=self.work)
        if job.returncode != 0:
            raise SystemExit(f"the job failed ({job.returncode}): {job.stderr}{job.stdout}")
        return wall, rss, json.loads(job.stdout)

    raw_script = ""

    def build(self) -> int:
        raise NotImplementedError

    def copies(self) -> tuple[str, str]:
        raise NotImplementedError

    def remaining(self) -> int:
        raise NotImplementedError

    def drop_copies(self) -> None:
        raise NotImplementedError

    def drop(self) -> None:
        raise NotImplementedError


def _schema(url: str, nullable: bool = False) -> None:
    """The tool's tables and the default refresh_tokens table, its expires_at index left for after the load
    (nullable: expires_at may be NULL)."""
    from sqlalchemy import MetaData, create_engine

    from jobs.app_tables import default_metadata
    from jobs.db import make_engine
    from jobs.schema import upgrade

    engine = make_engine(url) if url.startswith("sqlite") else create_engine(url.replace("postgresql://",
                                                                                        "postgresql+psycopg://"))
    upgrade(engine)
    tokens = default_metadata().tables["refresh_tokens"].to_metadata(MetaData())
    tokens.c.expires_at.nullable = nullable
    with engine.begin() as conn:
        tokens.create(conn)
        for index in tokens.indexes:
            index.drop(conn)
    engine.dispose()


def _index_ddl() -> str:
    return "CREATE INDEX ix_refresh_tokens_expires_at ON refresh_tokens (expires_at)"


class SqliteCase(Case):
    backend = "sqlite"
    raw_script = "raw_sqlite.py"

    @property
    def template(self) -> Path:
        return self.work / "template.db"

    def build(self) -> int:
        for path in self.work.glob("*.db*"):
            path.unlink()
        _schema(f"sqlite:///{self.template}", self.nullable)
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        conn = sqlite3.connect(self.template, isolation_level=None)
        conn.execute("BEGIN")
        # Expired: 8 to 38 days before now (past the 7-day cutoff); kept: 6 days ago to 30 days ahead.
        conn.execute(
            f"""
            WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :n)
            INSERT INTO refresh_tokens (id, user_id, token_hash, expires_at, created_at)
            SELECT i, i % 100000 + 1, printf('%064x', i * :hash),
                   CASE WHEN {self.expired_sql}
                        THEN datetime(:now, '-8 days', '-' || {self.past_sql} || ' seconds')
                        ELSE datetime(:now, '-6 days', '+' || {self.ahead_sql} || ' seconds')
                   END || '.000000',
                   datetime(:now, '-40 days') || '.000000'
            FROM s
            """,
            {"n": self.size, "hash": HASH, "now": now.isoformat(" ")},
        )
        conn.execute(_index_ddl())
        conn.execute("COMMIT")
        expected = conn.execute("SELECT count(*) FROM refresh_tokens WHERE expires_at < ?",
                                ((now - timedelta(days=RETENTION_DAYS)).isoformat(" "),)).fetchone()[0]
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        return expected

    def copies(self) -> tuple[str, str]:
        shutil.copyfile(self.template, self.work / "job.db")
        shutil.copyfile(self.template, self.work / "raw.db")
        return f"sqlite:///{self.work / 'job.db'}", str(self.work / "raw.db")

    def remaining(self) -> int:
        conn = sqlite3.connect(self.work / "job.db")
        try:
            return conn.execute("SELECT count(*) FROM refresh_tokens").fetchone()[0]
        finally:
            conn.close()

    def drop_copies(self) -> None:
        for name in ("job.db", "raw.db"):
            for path in self.work.glob(name + "*"):
                path.unlink()

    def drop(self) -> None:
        for path in self.work.glob("*.db*"):
            path.unlink()


class PostgresCase(Case):
    backend = "postgresql"
    raw_script = "raw_postgres.py"

    def __init__(self, work: Path, size: int, fraction: float, layout: str, admin_url: str) -> None:
        super().__init__(work, size, fraction, layout)
        self.admin_url = admin_url.replace("postgresql+psycopg://", "postgresql://")

    def _url(self, database: str) -> str:
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{database}"

    def _admin(self, *statements: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)

    def build(self) -> int:
        import psycopg

        self._admin(*(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)" for name in (PG_TEMPLATE, "cwbench_job",
                                                                                   "cwbench_raw")),
                    f"CREATE DATABASE {PG_TEMPLATE}")
        _schema(self._url(PG_TEMPLATE), self.nullable)
        expired, past, ahead = (sql.replace("i ", "i::bigint ").replace("%", "%%")
                                for sql in (self.expired_sql, self.past_sql, self.ahead_sql))
        with psycopg.connect(self._url(PG_TEMPLATE), autocommit=True) as conn:
            conn.execute(
                f"""
                INSERT INTO refresh_tokens (id, user_id, token_hash, expires_at, created_at)
                SELECT i, i %% 100000 + 1, md5(i::text) || md5((i + 1)::text),
                       CASE WHEN {expired}
                            THEN now_utc - interval '8 days' - {past} * interval '1 second'
                            ELSE now_utc - interval '6 days' + {ahead} * interval '1 second'
                       END,
                       now_utc - interval '40 days'
                FROM generate_series(1, %(n)s) AS i,
                     (SELECT date_trunc('second', now() AT TIME ZONE 'UTC') AS now_utc) AS t
                """,
                {"n": self.size, "hash": HASH},
            )
            conn.execute(_index_ddl())
            conn.execute("SELECT setval(pg_get_serial_sequence('refresh_tokens', 'id'), %s)", (self.size,))
            conn.execute("VACUUM ANALYZE refresh_tokens")
            return conn.execute("SELECT count(*) FROM refresh_tokens WHERE expires_at < "
                                "(now() AT TIME ZONE 'UTC') - make_interval(days => %s)",
                                (RETENTION_DAYS,)).fetchone()[0]

    def copies(self) -> tuple[str, str]:
        self._admin(f"CREATE DATABASE cwbench_job TEMPLATE {PG_TEMPLATE} STRATEGY FILE_COPY",
                    f"CREATE DATABASE cwbench_raw TEMPLATE {PG_TEMPLATE} STRATEGY FILE_COPY",
                    "CHECKPOINT")
        return self._url("cwbench_job"), self._url("cwbench_raw")

    def remaining(self) -> int:
        import psycopg

        with psycopg.connect(self._url("cwbench_job")) as conn:
            return conn.execute("SELECT count(*) FROM refresh_tokens").fetchone()[0]

    def drop_copies(self) -> None:
        self._admin(*(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)" for name in ("cwbench_job", "cwbench_raw")))

    def drop(self) -> None:
        self._admin(*(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)" for name in (PG_TEMPLATE, "cwbench_job",
                                                                                   "cwbench_raw")))


def show(r: Result) -> None:
    print(f"\n{r.backend} {r.size:,} rows, {r.expired:.0%} expired ({r.expected:,} deleted)")
    print(f"  job process {r.job_wall:6.2f} s (its run {r.job_run:6.2f} s)   raw DELETE statement {r.raw_statement:6.2f} s"
          f" (its process {r.raw_wall:6.2f} s)")
    print(f"  ratios: job process / raw statement {r.ratio_strict:5.2f}x, process / process {r.ratio_process:5.2f}x, "
          f"run / statement {r.ratio_work:5.2f}x")
    print(f"  job: {r.transactions} transactions, longest {r.longest:.3f} s, at most {r.most_rows:,} rows; peak RSS job {r.job_rss_kib / 1024:.0f} MiB"
          f" (raw process {r.raw_rss_kib / 1024:.0f} MiB)")
    if r.before_wall is not None and r.before_run is not None:
        print(f"  --before: job process {r.before_wall:6.2f} s (its run {r.before_run:6.2f} s; outside the run "
              f"{r.before_wall - r.before_run:5.2f} s, now {r.job_wall - r.job_run:5.2f} s): job process / raw "
              f"statement {r.before_wall / r.raw_statement:5.2f}x, process / process {r.before_wall / r.raw_wall:5.2f}x")


def summary(results: list[Result]) -> None:
    print(f"{'backend':10s} {'rows':>9s} {'expired':>7s} {'job s':>6s} {'run s':>6s} {'raw s':>6s} {'stmt s':>6s} "
          f"{'job/stmt':>8s} {'proc/proc':>9s} {'run/stmt':>8s} {'txns':>5s} {'longest':>7s} {'rows/txn':>8s} "
          f"{'RSS MiB':>7s}")
    for r in results:
        print(f"{r.backend:10s} {r.size:9,d} {r.expired:7.0%} {r.job_wall:6.2f} {r.job_run:6.2f} {r.raw_wall:6.2f} "
              f"{r.raw_statement:6.2f} {r.ratio_strict:7.2f}x {r.ratio_process:8.2f}x {r.ratio_work:7.2f}x "
              f"{r.transactions:5d} {r.longest:7.3f} {r.most_rows:8,d} {r.job_rss_kib / 1024:7.0f}")
    before = [r for r in results if r.before_wall is not None and r.before_run is not None]
    if before:
        print(f"\n{'--before':10s} {'rows':>9s} {'expired':>7s} {'job s':>6s} {'run s':>6s} {'outside':>7s} "
              f"{'now':>6s} {'job/stmt':>8s} {'now':>6s} {'proc/proc':>9s} {'now':>6s}")
        for r in before:
            assert r.before_wall is not None and r.before_run is not None
            print(f"{r.backend:10s} {r.size:9,d} {r.expired:7.0%} {r.before_wall:6.2f} {r.before_run:6.2f} "
                  f"{r.before_wall - r.before_run:7.2f} {r.job_wall - r.job_run:6.2f} "
                  f"{r.before_wall / r.raw_statement:7.2f}x {r.ratio_strict:5.2f}x "
                  f"{r.before_wall / r.raw_wall:8.2f}x {r.ratio_process:5.2f}x")
    print()
    longest = max(r.longest for r in results)
    print(f"aim: no transaction over {MAX_TRANSACTION} s: {'met' if longest <= MAX_TRANSACTION else 'MISSED'} "
          f"(longest {longest:.3f} s)")
    for label, ratio in (("job process / raw statement", "ratio_strict"), ("job process / raw process", "ratio_process"),
                         ("job run / raw statement", "ratio_work")):
        worst = max(results, key=lambda r: getattr(r, ratio))
        value = getattr(worst, ratio)
        print(f"aim: at most {MAX_RATIO}x, {label}: {'met' if value <= MAX_RATIO else 'MISSED'} "
              f"(worst {value:.2f}x: {worst.backend} {worst.size:,} {worst.expired:.0%})")
    halves = [r for r in results if r.backend == "sqlite" and r.expired >= 0.5]
    if halves:
        print("aim: SQLite, half expired, faster than the raw DELETE: "
              + "; ".join(f"{r.size:,}: job process / statement {r.ratio_strict:.2f}x, process / process "
                          f"{r.ratio_process:.2f}x, run / statement {r.ratio_work:.2f}x" for r in halves))
    for backend in sorted({r.backend for r in results}):
        by_size: dict[int, int] = {}
        for r in results:
            if r.backend == backend:
                by_size[r.size] = max(by_size.get(r.size, 0), r.job_rss_kib)
        if len(by_size) > 1:
            print(f"peak RSS of the job on {backend} by table size: "
                  + ", ".join(f"{size:,}: {kib / 1024:.0f} MiB" for size, kib in sorted(by_size.items())))


if __name__ == "__main__":
    main()
