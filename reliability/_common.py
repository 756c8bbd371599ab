"""What every reliability script shares.

Fresh databases whose URLs carry a secret marker, workspaces, invocations of the real CLI (a
process each: spawned with `python -m cli`, or forked from a parent that has already imported
cronwarden, so that 16 simultaneous invocations cost milliseconds instead of 16 interpreter
start-ups), time/round budgets, the ledger of faults and invariants, and the report table.

A script is bounded by `--rounds` and `--max-seconds` and stops by itself; it exits 1 when an
invariant broke, 0 otherwise, and writes its figures to reliability/results/<name>.json, which
`run_all.py` turns into RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLUGINS = REPO / "tests" / "plugin_pkg"
# The test suite's short runs write elsewhere, so they never replace a full run's figures.
RESULTS = Path(os.environ.get("CRONWARDEN_RELIABILITY_RESULTS") or Path(__file__).resolve().parent / "results")
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PG_ADMIN_URL = os.environ.get("CRONWARDEN_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MYSQL_ADMIN_URL = os.environ.get("CRONWARDEN_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test")
BACKENDS = ("sqlite", "postgres", "mariadb")

MYSQL_USER = f"cw_rel_{secrets.token_hex(4)}"  # per process: scripts running at once do not share a password
# Unique per process: a marker found anywhere it must not be is a leak, never a coincidence.
SECRETS = {
    "database": f"cwdbpw{secrets.token_hex(8)}",
    "smtp": f"cwsmtppw{secrets.token_hex(8)}",
    "admin": f"cwadminpw{secrets.token_hex(8)}",
}


# ---------------------------------------------------------------- budgets and the ledger

class Budget:
    """Rounds until `rounds` are done or `seconds` have passed, whichever comes first."""

    def __init__(self, rounds: int, seconds: float) -> None:
        self.rounds, self.seconds = rounds, seconds
        self.done = 0
        self.stopped_by_time = False
        self._start = time.monotonic()

    def __iter__(self) -> Iterator[int]:
        while self.done < self.rounds:
            if time.monotonic() - self._start >= self.seconds:
                self.stopped_by_time = True
                return
            yield self.done
            self.done += 1

    def split(self, parts: int) -> float:
        """Seconds left, shared fairly among `parts` scenarios still to run."""
        return max(1.0, (self.seconds - (time.monotonic() - self._start)) / max(parts, 1))


@dataclass
class Ledger:
    """One row of the report: a scenario on a backend, its rounds, faults and invariants."""

    scenario: str
    backend: str
    rounds: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    checks: int = 0
    violations: int = 0
    messages: list[str] = field(default_factory=list)
    figures: dict[str, float | int | str] = field(default_factory=dict)
    seconds: float = 0.0
    stopped_by_time: bool = False

    def fault(self, kind: str, n: int = 1) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + n

    def check(self, ok: bool, what: str) -> bool:
        """Count an invariant; keep the first messages of the ones that broke."""
        self.checks += 1
        if not ok:
            self.violations += 1
            if len(self.messages) < 20:
                self.messages.append(f"round {self.rounds}: {what}")
            print(f"  VIOLATION {self.scenario} [{self.backend}] round {self.rounds}: {what}", flush=True)
        return ok

    def figure(self, name: str, value: float | int | str) -> None:
        self.figures[name] = value


class Report:
    """The ledgers of one script: printed as a table, written as JSON, turned into an exit code."""

    def __init__(self, name: str, title: str) -> None:
        self.name, self.title = name, title
        self.ledgers: list[Ledger] = []
        self.started = time.time()

    @contextmanager
    def scenario(self, scenario: str, backend: str, budget: Budget | None = None) -> Iterator[Ledger]:
        ledger = Ledger(scenario, backend)
        self.ledgers.append(ledger)
        start = time.monotonic()
        try:
            yield ledger
        except Exception:  # noqa: BLE001 - a crash of the script itself is a violation, reported
            ledger.check(False, "the scenario itself crashed: " + traceback.format_exc(limit=3).strip())
        finally:
            ledger.seconds = round(time.monotonic() - start, 1)
            if budget is not None:
                ledger.rounds = max(ledger.rounds, budget.done)
                ledger.stopped_by_time = budget.stopped_by_time
            print(f"  {scenario} [{backend}]: {ledger.rounds} rounds, {sum(ledger.faults.values())} faults, "
                  f"{ledger.checks} checks, {ledger.violations} violations, {ledger.seconds} s", flush=True)

    @property
    def violations(self) -> int:
        return sum(lg.violations for lg in self.ledgers)

    def table(self) -> str:
        head = ("scenario", "backend", "rounds", "faults injected", "invariants checked", "violations", "s")
        rows = [head]
        for lg in self.ledgers:
            faults = ", ".join(f"{k} {v}" for k, v in sorted(lg.faults.items())) or "-"
            rounds = f"{lg.rounds}{' (time)' if lg.stopped_by_time else ''}"
            rows.append((lg.scenario, lg.backend, rounds, faults, str(lg.checks), str(lg.violations), str(lg.seconds)))
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def finish(self) -> int:
        """Print the table and the broken invariants, write the JSON, return the exit code."""
        print(f"\n{self.title}\n")
        print(self.table())
        for lg in self.ledgers:
            for msg in lg.messages:
                print(f"VIOLATION {lg.scenario} [{lg.backend}]: {msg}")
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{self.name}.json").write_text(json.dumps({
            "name": self.name, "title": self.title,
            "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.started)),
            "seconds": round(time.time() - self.started, 1),
            "ledgers": [lg.__dict__ for lg in self.ledgers],
        }, indent=2) + "\n", encoding="utf-8")
        print(f"\n{'FAILED' if self.violations else 'OK'}: {self.violations} invariant violations")
        return 1 if self.violations else 0


def arguments(description: str, rounds: int, seconds: float,
              backends: Sequence[str] = BACKENDS) -> argparse.ArgumentParser:
    """The options every script takes; a script adds its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=rounds, help=f"rounds per scenario (default {rounds})")
    parser.add_argument("--max-seconds", type=float, default=seconds,
                        help=f"stop after this long in all (default {seconds:g})")
    parser.add_argument("--backends", default=",".join(backends),
                        help=f"comma-separated, from {', '.join(backends)}")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    return parser


def seed_from(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    print(f"seed {seed} (rerun with --seed {seed})", flush=True)
    return seed


# ---------------------------------------------------------------- databases

def checker_engine(url: str):
    """An engine for the script's own looks at the database: no pool, so nothing is shared by a fork."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from jobs.db import normalize

    return create_engine(normalize(url), poolclass=NullPool)


@contextmanager
def fresh_database(backend: str, tmp: Path) -> Iterator[str]:
    """A new empty database; its URL carries SECRETS['database'] as the password where the server
    can take one (PostgreSQL's trust authentication ignores it; MariaDB gets a user of this process with it)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    if backend == "sqlite":
        tmp.mkdir(parents=True, exist_ok=True)
        yield f"sqlite:///{tmp / f'cw_{uuid.uuid4().hex[:8]}.db'}"
        return
    admin_url = PG_ADMIN_URL if backend == "postgres" else MYSQL_ADMIN_URL
    name = f"cwrel_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
        if backend == "mariadb":
            for host in ("%", "localhost", "127.0.0.1"):
                conn.execute(text(f"CREATE USER IF NOT EXISTS '{MYSQL_USER}'@'{host}' IDENTIFIED BY :pw"),
                             {"pw": SECRETS["database"]})
                conn.execute(text(f"ALTER USER '{MYSQL_USER}'@'{host}' IDENTIFIED BY :pw"), {"pw": SECRETS["database"]})
                conn.execute(text(f"GRANT ALL ON {name}.* TO '{MYSQL_USER}'@'{host}'"))
    url = make_url(admin_url).set(database=name, password=SECRETS["database"])
    if backend == "mariadb":
        url = url.set(username=MYSQL_USER)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            if backend == "postgres":
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                # An invocation still running (a script that failed half-way) would make DROP wait forever.
                for (pid,) in conn.execute(text("SELECT id FROM information_schema.processlist WHERE db = :db "
                                                "AND id <> CONNECTION_ID()"), {"db": name}).all():
                    try:
                        conn.execute(text(f"KILL CONNECTION {int(pid)}"))
                    except Exception:  # noqa: BLE001 - it ended by itself meanwhile
                        pass
                conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
                for host in ("%", "localhost", "127.0.0.1"):
                    conn.execute(text(f"DROP USER IF EXISTS '{MYSQL_USER}'@'{host}'"))
        admin.dispose()


def server_reachable(backend: str) -> str | None:
    """None when the backend's server answers, else why not (a script skips that backend, loudly)."""
    if backend == "sqlite":
        return None
    from sqlalchemy import create_engine, text

    url = PG_ADMIN_URL if backend == "postgres" else MYSQL_ADMIN_URL
    try:
        eng = create_engine(url, connect_args={"connect_timeout": 3})
        with eng.connect() as conn:
            conn.execute(text("SELECT 1"))
        eng.dispose()
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    return None


def selected_backends(args: argparse.Namespace, report: Report) -> list[str]:
    """The requested backends whose servers answer; a missing one is a violation under CI=true."""
    chosen = []
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        why = server_reachable(backend)
        if why is None:
            chosen.append(backend)
            continue
        print(f"  {backend}: server not reachable ({why}); skipped", flush=True)
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            with report.scenario("server reachable", backend) as lg:
                lg.check(False, f"{backend} not reachable under CI=true: {why}")
    return chosen


# ---------------------------------------------------------------- workspaces and invocations

@dataclass
class Workspace:
    """A working directory with a config file, a database URL and a lock folder, as cron would have."""

    path: Path
    db_url: str
    plugins: bool = True

    @property
    def config_file(self) -> Path:
        return self.path / "cronwarden.toml"

    def write_config(self, text: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(text, encoding="utf-8")

    def prepare(self, config: str = "") -> Workspace:
        """Config written, the tool's tables and the default application tables created."""
        from jobs.app_tables import create_default_tables
        from jobs.db import make_engine
        from jobs.schema import upgrade

        self.write_config(config)
        eng = make_engine(self.db_url)
        upgrade(eng)
        create_default_tables(eng)
        eng.dispose()
        return self

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CRONWARDEN_")}
        env.update(
            CRONWARDEN_DATABASE_URL=self.db_url,
            CRONWARDEN_CONFIG=str(self.config_file),
            CRONWARDEN_LOCK_DIR=str(self.path / "locks"),
            NO_COLOR="1",
            PYTHONPATH=os.pathsep.join([str(REPO)] + ([str(PLUGINS)] if self.plugins else [])),
        )
        env.update(extra)
        return env


@dataclass
class Invocation:
    """One CLI process: signal it, wait for it, read what it printed."""

    pid: int
    out_path: Path
    err_path: Path
    popen: subprocess.Popen | None = None
    code: int | None = None
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    def signal(self, sig: int) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def poll(self) -> int | None:
        if self.code is None:
            if self.popen is not None:
                self.code = self.popen.poll()
            else:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.code = os.waitstatus_to_exitcode(status)
            if self.code is not None:
                self.ended = time.monotonic()
        return self.code

    def wait(self, timeout: float = 120) -> int:
        """The exit code (negative: killed by that signal); SIGKILLs it after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                self.signal(signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.005)
        return self.code  # type: ignore[return-value]

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace")


_logs = {"n": 0}


def _log_paths(ws: Workspace) -> tuple[Path, Path]:
    _logs["n"] += 1
    folder = ws.path / "out"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{_logs['n']}.out", folder / f"{_logs['n']}.err"


def spawn(ws: Workspace, *args: str, env: dict[str, str] | None = None) -> Invocation:
    """`python -m cli ARGS` as a new process, exactly what cron starts."""
    out, err = _log_paths(ws)
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=ws.path, env=env or ws.env(),
                                stdout=fo, stderr=fe, stdin=subprocess.DEVNULL)
    return Invocation(proc.pid, out, err, popen=proc)


PRELOADED = (
    "cli.db_commands", "cli.errors", "cli.job_commands", "cli.logs", "cli.metrics_commands", "cli.ops_commands",
    "cli.queue_commands", "cli.render", "jobs.app_tables", "jobs.builtin", "jobs.config", "jobs.db", "jobs.locks.file",
    "jobs.locks.lease", "jobs.locks.mysql", "jobs.locks.postgres", "jobs.observe", "jobs.registry", "jobs.retry",
    "jobs.schema", "pydantic", "smtplib", "sqlalchemy.dialects.sqlite.pysqlite", "sqlite3", "tomllib",
    "typer._adapters",
)


def preload() -> None:
    """Import what an invocation imports, once, before forking (the parent never runs the CLI itself,
    so no registry, engine or logging state exists to be inherited). The test jobs' package joins
    sys.path here, not at import, so importing this module changes nothing for its importer."""
    if str(PLUGINS) not in sys.path:
        sys.path.insert(0, str(PLUGINS))
    import cronwarden_testjobs  # noqa: F401
    import psycopg  # noqa: F401
    import pymysql  # noqa: F401
    import sqlalchemy
    import sqlalchemy.dialects.mysql.pymysql
    import sqlalchemy.dialects.postgresql.psycopg  # noqa: F401

    import cli.app  # noqa: F401
    import jobs.runner  # noqa: F401

    # What the CLI imports only once a command runs (cheap cron ticks): imported here, each fork starts
    # with it instead of importing it again (without bytecode caching, hundreds of ms per invocation).
    for name in PRELOADED:
        try:
            importlib.import_module(name)
        except ImportError:  # a library's private module that a newer version moved: only slower
            pass


def fork(ws: Workspace, *args: str, env: dict[str, str] | None = None,
         enter: Callable[[], None] | None = None) -> Invocation:
    """The CLI's entry point in a forked child of this (preloaded) process: a real, separate process
    with its own connections, locks and signal handlers, started in a millisecond or two.
    `enter` runs first in the child (hostnet.Host.enter: the invocation runs on that host)."""
    out, err = _log_paths(ws)
    out.touch()
    err.touch()  # before the child exists: the parent may read them at once
    environment = env or ws.env()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 70
        try:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            for fd, path in ((1, out), (2, err)):
                target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(target, fd)
                os.close(target)
            # Fresh streams on fds 1 and 2: the parent's may be a test runner's capture objects.
            sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
            sys.stderr = open(2, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
            os.chdir(ws.path)
            if enter is not None:
                enter()
            os.environ.clear()
            os.environ.update(environment)
            from cli.app import main

            code = main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
            code = 70
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    return Invocation(pid, out, err)


def start_together(ws: Workspace, n: int, *args: str, env: dict[str, str] | None = None) -> list[Invocation]:
    """n invocations of the same command, forked back to back (all start within a few ms)."""
    return [fork(ws, *args, env=env) for _ in range(n)]


# ---------------------------------------------------------------- secrets

def leaks(text: str) -> list[str]:
    """The names of the secret markers that appear in text."""
    return [name for name, marker in SECRETS.items() if marker in text]


def check_no_secrets(ledger: Ledger, text: str, where: str) -> None:
    found = leaks(text)
    ledger.check(not found, f"secret {found} appeared in {where}")


def check_invocation_secrets(ledger: Ledger, inv: Invocation, what: str = "invocation") -> None:
    check_no_secrets(ledger, inv.stdout + inv.stderr, f"the output of {what} (pid {inv.pid})")


def database_text(url: str) -> str:
    """Every row of every table in the database as text: history, tracking, queue, application rows.
    Only the tables' names are looked up (reflecting every table's columns and keys cost far more than
    reading the rows, taken twice around each of bad_input.py's hundreds of invocations)."""
    from sqlalchemy import inspect, text

    eng = checker_engine(url)
    quote = eng.dialect.identifier_preparer.quote
    parts = []
    with eng.connect() as conn:
        for name in sorted(inspect(conn).get_table_names()):
            for row in conn.execute(text(f"SELECT * FROM {quote(name)}")):
                parts.append(f"{name}: {tuple(row)!r}")
    eng.dispose()
    return "\n".join(parts)


def check_database_secrets(ledger: Ledger, url: str) -> None:
    check_no_secrets(ledger, database_text(url), "the database's rows")


def wait_all(invocations: Sequence[Invocation], timeout: float = 120) -> list[int]:
    """Exit codes of all, each exit time noted as it happens (waiting on one at a time would not)."""
    deadline = time.monotonic() + timeout
    while None in [inv.poll() for inv in invocations]:  # a list: every one polled each time
        if time.monotonic() > deadline:
            for inv in invocations:
                if inv.code is None:
                    inv.signal(signal.SIGKILL)
            deadline = float("inf")
        time.sleep(0.002)
    return [inv.code for inv in invocations]  # type: ignore[misc]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def smtp_sink(folder: Path, faults: str = "250:100", seed: int = 0,
              password: str | None = None) -> Iterator[tuple[int, Path]]:
    """reliability/smtp_sink.py in its own process: (port, log of accepted Message-IDs)."""
    folder.mkdir(parents=True, exist_ok=True)
    port, log = free_port(), folder / f"smtp-{uuid.uuid4().hex[:6]}.log"
    cmd = [sys.executable, str(Path(__file__).with_name("smtp_sink.py")), "--port", str(port), "--log", str(log),
           "--faults", faults, "--seed", str(seed)] + (["--auth-password", password] if password else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        if proc.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
            raise RuntimeError("the SMTP sink did not start")
        yield port, log
    finally:
        proc.kill()
        proc.wait()


def smtp_log(log: Path) -> tuple[dict[int, int], dict[int, int]]:
    """(accepted count, 550 count) per email row id, from the sink's log."""
    accepted: dict[int, int] = {}
    rejected: dict[int, int] = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        kind, _, msgid = line.partition(" ")
        try:
            row = int(msgid.strip("<").split(".", 1)[0])
        except ValueError:
            continue
        if kind == "CUT":
            continue
        target = accepted if kind == "ACCEPT" else rejected
        target[row] = target.get(row, 0) + 1
    return accepted, rejected


def add_emails(url: str, n: int, tag: str) -> None:
    """n pending emails, due now."""
    from datetime import datetime, timezone

    from sqlalchemy import MetaData, Table, insert

    eng = checker_engine(url)
    table = Table("email_queue", MetaData(), autoload_with=eng)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    rows = [{"to_address": f"user{i}@example.com", "subject": f"{tag} {i}", "body": f"Hello {i}\n",
             "status": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now} for i in range(n)]
    with eng.begin() as conn:
        for start in range(0, n, 1000):
            conn.execute(insert(table), rows[start:start + 1000])
    eng.dispose()


def email_states(url: str) -> dict[int, tuple[str, str | None]]:
    """id -> (status, last_error) for every email row."""
    from sqlalchemy import MetaData, Table, select

    eng = checker_engine(url)
    table = Table("email_queue", MetaData(), autoload_with=eng)
    with eng.connect() as conn:
        rows = {r.id: (r.status, r.last_error) for r in conn.execute(select(table.c.id, table.c.status,
                                                                             table.c.last_error))}
    eng.dispose()
    return rows


def age_claims(url: str, minutes: int = 60) -> int:
    """Move the claims of rows left in `sending` back in time, as if the visibility timeout had passed."""
    from datetime import timedelta

    from sqlalchemy import MetaData, Table, select, update

    eng = checker_engine(url)
    table = Table("email_queue", MetaData(), autoload_with=eng)
    with eng.begin() as conn:
        rows = conn.execute(select(table.c.id, table.c.claimed_at).where(table.c.status == "sending")).all()
        for row in rows:
            conn.execute(update(table).where(table.c.id == row.id).values(
                claimed_at=row.claimed_at - timedelta(minutes=minutes)))
    eng.dispose()
    return len(rows)


def smtp_cut(log: Path) -> set[int]:
    """Email row ids the sink took and then cut the connection on before replying."""
    rows = set()
    for line in log.read_text(encoding="utf-8").splitlines():
        kind, _, msgid = line.partition(" ")
        if kind == "CUT":
            rows.add(int(msgid.strip("<").split(".", 1)[0]))
    return rows
