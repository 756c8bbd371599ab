"""Benchmark: email-queue sending queued emails to a local aiosmtpd server running in another process.

Variants, all sending the same messages (the job's own composer, the same bytes):

- job (sqlite|postgresql): the real CLI in this process, `email-queue --force --batch-size N`
  (claims, outcome bookkeeping, tracking and the lock included); the queue is refilled between
  rounds, outside the timing.
- job, runs of 100: the same through N/100 invocations of the default batch_size.
- job, runs of 100 in one warm process: what `email-queue --for 55s` does round after round, one App
  (configuration, engine, lock backend) for all N/100 runs of the default batch_size, each run a
  full `runner.run_job` (tracking rows, lock, history, claims, outcomes); forced, so that the runs
  follow each other instead of waiting for the 10 s slots. Building the App is timed too.
- bare loop: smtplib over one reused connection, composing each message, no database.
- connection per email: smtplib connect, EHLO, send, QUIT for every message.

The server gets its own process so that it does not share the GIL with the sender. Rounds
interleave the variants (the machine may be shared): the table shows the median and best
round of each, ratios of medians, and the sender process's CPU time per email (all its
threads, SQLite included; the server's and PostgreSQL's own CPU excluded), which shared-machine
noise disturbs far less than wall time. Results go to stdout; copy them into
benchmarks/results/email_queue.md.

    python benchmarks/email_queue.py [--emails 2000] [--rounds 3] [--pg URL | --no-pg]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import smtplib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import PG_ADMIN_URL, machine, postgres_version

FROM = "Shop <noreply@shop.example>"
CREATED = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
BODY = "".join(f"Line {i} of a transactional email, long enough to look like one.\n" for i in range(20))


def _serve(port: int, count, ready, stop) -> None:
    from aiosmtpd.controller import Controller

    class Counting:
        async def handle_DATA(self, server, session, envelope) -> str:
            with count.get_lock():
                count.value += 1
            return "250 2.0.0 OK"

    controller = Controller(Counting(), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Row:
    """What the job reads from the queue, for composing the same messages outside it."""

    def __init__(self, i: int) -> None:
        self.id = i
        self.to_address = f"user{i}@example.org"
        self.subject = f"Your order #{i} has shipped"
        self.body = BODY
        self.created_at = CREATED


def _messages() -> Callable[[int], object]:
    from jobs.builtin.email_rows import message_id
    from jobs.builtin.mail_transport import Sender, compose

    sender = Sender.parse(FROM)

    def build(i: int):
        row = Row(i)
        return compose(name=f"{i:010d}", sender=sender, to_address=row.to_address, subject=row.subject,
                       body=row.body, message_id=message_id(row, "email_queue", sender.domain), date=CREATED)

    return build


def bare_loop(port: int, n: int) -> float:
    build = _messages()
    started = time.perf_counter()
    conn = smtplib.SMTP("127.0.0.1", port, timeout=30)
    conn.ehlo()
    for i in range(1, n + 1):
        message = build(i)
        conn.sendmail("noreply@shop.example", [message.recipient], message.data)
    conn.quit()
    return time.perf_counter() - started


def connection_per_email(port: int, n: int) -> float:
    build = _messages()
    started = time.perf_counter()
    for i in range(1, n + 1):
        message = build(i)
        conn = smtplib.SMTP("127.0.0.1", port, timeout=30)
        conn.ehlo()
        conn.sendmail("noreply@shop.example", [message.recipient], message.data)
        conn.quit()
    return time.perf_counter() - started


class JobBench:
    """A workspace (config + database) for running the real CLI in this process."""

    def __init__(self, url: str, port: int, directory: Path) -> None:
        from jobs.app_tables import create_default_tables
        from jobs.db import make_engine
        from jobs.schema import upgrade

        self.url = url
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "cronwarden.toml"
        self.config.write_text(f'[jobs.email-queue]\nsmtp_host = "127.0.0.1"\nsmtp_port = {port}\n'
                               f'from_address = "{FROM}"\n', encoding="utf-8")
        self.engine = make_engine(url)
        upgrade(self.engine)
        create_default_tables(self.engine)

    def refill(self, n: int) -> None:
        from sqlalchemy import delete, insert

        from jobs.app_tables import default_metadata

        emails = default_metadata().tables["email_queue"]
        rows = [{"to_address": row.to_address, "subject": row.subject, "body": row.body, "status": "pending",
                 "attempts": 0, "created_at": row.created_at} for row in map(Row, range(1, n + 1))]
        with self.engine.begin() as conn:
            conn.execute(delete(emails))
            if rows:
                conn.execute(insert(emails), rows)

    def sent(self) -> int:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM email_queue WHERE status = 'sent'")).scalar()

    def empty_runs(self, runs: int) -> tuple[float, float]:
        """(wall ms, CPU ms) of one invocation that finds the queue empty: the per-run fixed cost."""
        from cli.app import main

        self._environ()
        self.refill(0)
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(runs):
            if main(["--quiet", "email-queue", "--force"]) != 0:
                raise RuntimeError("email-queue failed on an empty queue")
        return (time.perf_counter() - started) / runs * 1000, (time.process_time() - cpu) / runs * 1000

    def _environ(self) -> None:
        os.environ.update(CRONWARDEN_DATABASE_URL=self.url, CRONWARDEN_CONFIG=str(self.config),
                          CRONWARDEN_LOCK_DIR=str(self.directory / "locks"))

    def run(self, n: int, per_run: int) -> float:
        from cli.app import main

        self._environ()
        self.refill(n)
        started = time.perf_counter()
        for _ in range(n // per_run):
            code = main(["--quiet", "email-queue", "--force", "--batch-size", str(per_run)])
            if code != 0:
                raise RuntimeError(f"email-queue exited {code}")
        elapsed = time.perf_counter() - started
        if self.sent() != n:
            raise RuntimeError(f"only {self.sent()} of {n} rows are marked sent")
        return elapsed


    def run_warm(self, n: int, per_run: int) -> float:
        """n emails in runs of per_run in one process, as a `--for` loop runs them (see the module docstring)."""
        import dataclasses

        from cli import logs
        from cli.state import State
        from jobs import runner
        from jobs.outcome import RunStatus, Trigger
        from jobs.registry import builtin_specs

        self._environ()
        self.refill(n)
        started = time.perf_counter()
        state = State(builtin_specs(), False, str(self.config), self.url, quiet=True)
        logs.setup(state.log_format, state.log_level())
        app = state.app()
        settings = dataclasses.replace(app.config.job("email-queue").settings, batch_size=per_run)
        try:
            for _ in range(n // per_run):
                report = runner.run_job(app, "email-queue", Trigger.FORCED, settings=settings)
                if report.status is not RunStatus.SUCCEEDED or report.counts.get("sent") != per_run:
                    raise RuntimeError(f"email-queue: {report.status.value}, counts {report.counts}, {report.error}")
        finally:
            app.close()
        elapsed = time.perf_counter() - started
        if self.sent() != n:
            raise RuntimeError(f"only {self.sent()} of {n} rows are marked sent")
        return elapsed


def _fresh_pg(admin_url: str) -> tuple[str, Callable[[], None]]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"cw_bench_{uuid.uuid4().hex[:8]}"
    from jobs.db import normalize

    admin = create_engine(normalize(admin_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()

    return make_url(admin_url).set(database=name).render_as_string(hide_password=False), drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pg", default=PG_ADMIN_URL)
    parser.add_argument("--no-pg", action="store_true")
    args = parser.parse_args()
    n = args.emails

    mp = multiprocessing.get_context("spawn")
    port, count, ready, stop = _free_port(), mp.Value("q", 0), mp.Event(), mp.Event()
    server = mp.Process(target=_serve, args=(port, count, ready, stop), daemon=True)
    server.start()
    if not ready.wait(30):
        raise SystemExit("the SMTP server did not start")
    cleanups: list[Callable[[], None]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            benches = {"sqlite": JobBench(f"sqlite:///{tmp}/bench.db", port, Path(tmp) / "sqlite")}
            if not args.no_pg:
                pg_url, drop = _fresh_pg(args.pg)
                cleanups.append(drop)
                benches["postgresql"] = JobBench(pg_url, port, Path(tmp) / "pg")
            variants: dict[str, Callable[[], float]] = {
                "bare loop (one connection, no database)": lambda: bare_loop(port, n),
                "connection per email (no database)": lambda: connection_per_email(port, n),
            }
            for name, bench in benches.items():
                variants[f"job, {name}, one run of {n}"] = lambda b=bench: b.run(n, n)
                variants[f"job, {name}, {n // 100} runs of 100"] = lambda b=bench: b.run(n, 100)
                variants[f"job, {name}, {n // 100} runs of 100, one warm process"] = lambda b=bench: b.run_warm(n, 100)
            rates: dict[str, list[float]] = {name: [] for name in variants}
            cpu: dict[str, list[float]] = {name: [] for name in variants}
            for round_no in range(1, args.rounds + 1):
                for name, variant in variants.items():
                    before, cpu_before = count.value, time.process_time()
                    elapsed = variant()
                    cpu[name].append((time.process_time() - cpu_before) / n * 1e6)
                    if count.value - before != n:
                        raise RuntimeError(f"{name}: the server accepted {count.value - before} of {n}")
                    rates[name].append(n / elapsed)
                    print(f"round {round_no}: {name}: {n / elapsed:,.0f} emails/s", file=sys.stderr)
            overhead = {name: bench.empty_runs(20) for name, bench in benches.items()}
            for bench in benches.values():
                bench.engine.dispose()
    finally:
        for cleanup in cleanups:
            cleanup()
        stop.set()
        server.join(10)
    _report(rates, cpu, overhead, n, args.rounds)


def _report(rates: dict[str, list[float]], cpu: dict[str, list[float]], overhead: dict[str, tuple[float, float]],
            n: int, rounds: int) -> None:
    median = {name: statistics.median(values) for name, values in rates.items()}
    bare = median["bare loop (one connection, no database)"]
    per_connection = median["connection per email (no database)"]
    print(f"{n:,} emails to aiosmtpd on 127.0.0.1 (separate process); {rounds} interleaved rounds; "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{machine()}, PostgreSQL {postgres_version() or 'not reachable'}")
    print()
    print("| variant | median emails/s | best emails/s | vs bare loop | vs connection per email "
          "| sender CPU µs/email |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, values in rates.items():
        print(f"| {name} | {median[name]:,.0f} | {max(values):,.0f} | {median[name] / bare:.2f}× "
              f"| {median[name] / per_connection:.2f}× | {statistics.median(cpu[name]):,.0f} |")
    print()
    for name, (wall, cpu_ms) in overhead.items():
        print(f"- one invocation that finds the queue empty ({name}): {wall:.1f} ms wall, {cpu_ms:.1f} ms CPU "
              f"(CLI, config, engine, lock, tracking rows, one claim), in this process, modules already imported")


if __name__ == "__main__":
    main()
