"""The README's "Your own jobs" example on PostgreSQL, against the raw DELETE and the README's former pattern.

A `sessions` table (bigint id, seen_at with an index, a payload) of --rows rows, --fraction of them seen
more than 30 days ago, laid out `scattered` (old rows spread over the whole table, as sessions seen again
later are) or `clustered` (rows stored in seen_at order). On a fresh copy of it each, in one run:
- raw: one `DELETE FROM sessions WHERE seen_at < cutoff` in one transaction (a minimal psycopg client);
- former: the README's former job, batches of `DELETE … WHERE id IN (SELECT id … WHERE seen_at < cutoff
  LIMIT n)`, each its own transaction, until one deletes nothing (same client);
- readme: the README's example taken verbatim from README.md, installed as a plugin job and run as
  `cronwarden purge-sessions --force --json` (its run: the report's duration; the process: wall time).

    .venv/bin/python benchmarks/readme_job.py                          # 1M rows, half old, both layouts
    .venv/bin/python benchmarks/readme_job.py --rows 100000 --layouts scattered   # quick
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import PG_ADMIN_URL, REPO, bench_env, cronwarden_argv, machine, postgres_version, run, timed_child

TEMPLATE = "cwbench_readme_template"
COPY = "cwbench_readme"
HASH = 2654435761  # Knuth's multiplicative hash: spreads the old rows over the whole table
CUTOFF = "(now() AT TIME ZONE 'UTC') - interval '30 days'"


def readme_plugin(site: Path) -> None:
    """The README's myapp package and its entry point, as `pip install` of myapp would leave them."""
    text = (REPO / "README.md").read_text(encoding="utf-8")

    def block(language: str, first: str) -> str:
        match = re.search(rf"^```{language}\n({re.escape(first)}\n.*?)^```$", text, re.MULTILINE | re.DOTALL)
        if not match:
            raise SystemExit(f"README.md has no {language} block starting with {first!r}")
        return match.group(1)

    (site / "myapp").mkdir(parents=True)
    (site / "myapp" / "__init__.py").write_text("")
    (site / "myapp" / "maintenance.py").write_text(block("python", "# myapp/maintenance.py"))
    entries = tomllib.loads(block("toml", "# myapp's pyproject.toml"))["project"]["entry-points"]["cronwarden.jobs"]
    dist = site / "myapp-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myapp\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[cronwarden.jobs]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()))


class Server:
    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url.replace("postgresql+psycopg://", "postgresql://")

    def url(self, database: str) -> str:
        return f"{self.admin_url.rpartition('/')[0]}/{database}"

    def admin(self, *statements: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for statement in statements:
                conn.execute(statement)

    def build(self, rows: int, fraction: float, layout: str, work: Path) -> int:
        import psycopg

        self.admin(f"DROP DATABASE IF EXISTS {COPY} WITH (FORCE)", f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)",
                   f"CREATE DATABASE {TEMPLATE}")
        run([*cronwarden_argv(python_m=True), "--database-url", self.url(TEMPLATE), "db", "upgrade"],
            env=bench_env(work, self.url(TEMPLATE), PYTHONPATH=str(REPO)), cwd=work)
        old = (f"(i::bigint * {HASH}) % 1000000 < {int(fraction * 1_000_000)}" if layout == "scattered"
               else f"i <= {int(rows * fraction)}")
        # clustered: ids (and the heap) follow seen_at; scattered: old and recent rows interleave
        spread = f"((i::bigint * {HASH}) % 2500000) * interval '1 second'"
        seen = (f"CASE WHEN {old} THEN t.now - interval '31 days' - {spread} "
                f"ELSE t.now - interval '29 days' + {spread} END")
        if layout == "clustered":
            seen = (f"CASE WHEN {old} THEN t.now - interval '60 days' + i * (interval '29 days' / {rows}) "
                    f"ELSE t.now - interval '29 days' + i * (interval '29 days' / {rows}) END")
        with psycopg.connect(self.url(TEMPLATE), autocommit=True) as conn:
            conn.execute("CREATE TABLE sessions (id bigint PRIMARY KEY, seen_at timestamp NOT NULL, payload text)")
            conn.execute(f"INSERT INTO sessions SELECT i, {seen}, md5(i::text) FROM generate_series(1, {rows}) AS i, "
                         "(SELECT date_trunc('second', now() AT TIME ZONE 'UTC') AS now) AS t")
            conn.execute("CREATE INDEX ix_sessions_seen_at ON sessions (seen_at)")
            conn.execute("VACUUM ANALYZE sessions")
            return conn.execute(f"SELECT count(*) FROM sessions WHERE seen_at < {CUTOFF}").fetchone()[0]

    def copy(self) -> str:
        self.admin(f"DROP DATABASE IF EXISTS {COPY} WITH (FORCE)",
                   f"CREATE DATABASE {COPY} TEMPLATE {TEMPLATE} STRATEGY FILE_COPY", "CHECKPOINT")
        return self.url(COPY)

    def drop(self) -> None:
        self.admin(f"DROP DATABASE IF EXISTS {COPY} WITH (FORCE)", f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")


def raw(url: str) -> dict:
    import psycopg

    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        deleted = conn.execute(f"DELETE FROM sessions WHERE seen_at < {CUTOFF}").rowcount
        conn.commit()
        return {"seconds": time.perf_counter() - started, "deleted": deleted, "transactions": 1}


def former(url: str, batch: int) -> dict:
    import psycopg

    statement = (f"DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE seen_at < {CUTOFF} "
                 f"LIMIT {batch})")
    with psycopg.connect(url) as conn:
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + statement).fetchall())
        conn.rollback()
        deleted, transactions, longest, started = 0, 0, 0.0, time.perf_counter()
        while True:
            began = time.perf_counter()
            n = conn.execute(statement).rowcount
            conn.commit()
            longest, transactions, deleted = max(longest, time.perf_counter() - began), transactions + 1, deleted + n
            if n == 0:
                break
        return {"seconds": time.perf_counter() - started, "deleted": deleted, "transactions": transactions,
                "longest": longest, "plan": plan}


def readme(url: str, site: Path, work: Path, batch: int) -> dict:
    env = bench_env(work, url, PYTHONPATH=f"{REPO}:{site}")
    wall, _, result = timed_child([*cronwarden_argv(python_m=True), "--database-url", url, "purge-sessions",
                                   "--force", "--json", "--batch-size", str(batch)], env=env, cwd=work)
    if result.returncode != 0:
        raise SystemExit(f"purge-sessions exited {result.returncode}:\n{result.stderr}")
    report = json.loads(result.stdout)
    return {"seconds": report["duration_seconds"], "process": wall, "deleted": report["counts"]["deleted"],
            "transactions": report["transactions"], "longest": report["longest_transaction_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--fraction", type=float, default=0.5, help="share of rows older than the cutoff")
    parser.add_argument("--layouts", nargs="+", default=["scattered", "clustered"], choices=["scattered", "clustered"])
    parser.add_argument("--batch-size", type=int, default=5000, help="the README's default")
    parser.add_argument("--reps", type=int, default=1)
    args = parser.parse_args()
    version = postgres_version()
    if version is None:
        raise SystemExit(f"PostgreSQL does not answer at {PG_ADMIN_URL}")
    print(f"{machine()}, PostgreSQL {version}")
    server = Server(PG_ADMIN_URL)
    with tempfile.TemporaryDirectory() as tmp:
        work, site = Path(tmp), Path(tmp) / "site"
        readme_plugin(site)
        try:
            for layout in args.layouts:
                expected = server.build(args.rows, args.fraction, layout, work)
                print(f"\n{layout}: {args.rows:,} sessions, {expected:,} older than 30 days, batch {args.batch_size:,}")
                for rep in range(args.reps):
                    results = {"raw": raw(server.copy()), "former": former(server.copy(), args.batch_size),
                               "readme": readme(server.copy(), site, work, args.batch_size)}
                    if rep == 0:
                        print("  former pattern's plan:\n    " + results["former"]["plan"].replace("\n", "\n    "))
                    base = results["raw"]["seconds"]
                    for name, r in results.items():
                        assert r["deleted"] == expected, (name, r["deleted"], expected)
                        extra = f", process {r['process']:.2f} s" if "process" in r else ""
                        longest = f", longest {r['longest']:.3f} s" if "longest" in r else ""
                        print(f"  {name:7} {r['seconds']:8.2f} s  {r['seconds'] / base:6.2f}x raw  "
                              f"{r['transactions']:5} transactions{longest}{extra}")
        finally:
            server.drop()


if __name__ == "__main__":
    main()
