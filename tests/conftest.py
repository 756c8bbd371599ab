"""Shared fixtures: real databases (skip locally, fail under CI=true), the CLI in and out of process.

Each test process (one per pytest-xdist worker) has one database per server, reset between tests
(tests/databases.py) instead of created and dropped per test."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.databases import ServerDatabase

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_ADMIN_URL = os.environ.get("CRONWARDEN_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MYSQL_ADMIN_URL = os.environ.get("CRONWARDEN_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test")
REPO = Path(__file__).resolve().parent.parent
PLUGINS = Path(__file__).resolve().parent / "plugin_pkg"


def _unavailable(what: str, exc: Exception) -> None:
    """dramatiq's rule: a missing server skips the test locally and fails it in CI."""
    if CI:
        raise RuntimeError(f"{what} is not reachable under CI=true: {exc}") from exc
    pytest.skip(f"{what} unavailable (not running or not reachable): {type(exc).__name__}")


def _server_database(admin_url: str, what: str) -> Iterator[ServerDatabase]:
    from tests.databases import ServerDatabase

    try:
        database = ServerDatabase(admin_url)
    except Exception as exc:  # noqa: BLE001
        _unavailable(what, exc)
    yield database
    database.drop()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[ServerDatabase]:
    """This test process's PostgreSQL database, created once (a missing server skips, or fails under CI)."""
    yield from _server_database(PG_ADMIN_URL, "PostgreSQL")


@pytest.fixture(scope="session")
def mysql_database() -> Iterator[ServerDatabase]:
    """This test process's MariaDB database, created once (a missing server skips, or fails under CI)."""
    yield from _server_database(MYSQL_ADMIN_URL, "MariaDB")


def _server_url(request: pytest.FixtureRequest, database: ServerDatabase) -> str:
    """The database as a new one would be; the `engine` fixture, when the test has it, sets it up instead."""
    if "engine" not in request.fixturenames:
        database.empty()
    return database.url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cronwarden.db'}"


@pytest.fixture
def pg_url(request: pytest.FixtureRequest, pg_database: ServerDatabase) -> str:
    return _server_url(request, pg_database)


@pytest.fixture
def mysql_url(request: pytest.FixtureRequest, mysql_database: ServerDatabase) -> str:
    return _server_url(request, mysql_database)


def pytest_configure(config: pytest.Config) -> None:
    """The tests' own MariaDB connections are made as the tool makes its own (jobs.mysql_driver: no CA store
    read for TLS that verifies nothing, 24 ms of CPU each). The checkout's bytecode is compiled once before
    the workers start, as an install of the wheel compiles it: the CLI processes the tests start would
    otherwise compile every module of the tool from source where PYTHONDONTWRITEBYTECODE is set (about a
    tenth of their CPU)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "do_connect")
    def _mysql_connection(dialect, _record, cargs, cparams):
        if dialect.name == "mysql" and dialect.driver == "pymysql":
            from jobs.mysql_driver import connection_class

            return connection_class()(*cargs, **cparams)
        return None

    if hasattr(config, "workerinput"):
        return
    import compileall

    for package in ("cli", "jobs", "cronwarden", "tests"):
        compileall.compile_dir(REPO / package, quiet=1, workers=1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first (real processes, real waits): the workers take them while the quick ones are still
    queued behind them to fill the gaps, so no long test starts last and keeps the run waiting for it."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: two workers per core. Most tests wait (on a CLI process, a server, a lock), so a core idles
    under one worker; measured on two cores, four workers end the suite sooner than two."""
    return 2 * (os.cpu_count() or 1)


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A `backend_neutral` test (its SQL is the same everywhere: rendering, argv, config) runs on SQLite only."""
    if "db_url" in metafunc.fixturenames and metafunc.definition.get_closest_marker("backend_neutral"):
        metafunc.definition.add_marker(pytest.mark.parametrize("db_url", ["sqlite"], indirect=True))


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test on SQLite, PostgreSQL and MariaDB."""
    name = {"sqlite": "sqlite_url", "postgres": "pg_url", "mariadb": "mysql_url"}[request.param]
    return request.getfixturevalue(name)


def _standard_tables(url: str) -> None:
    """The tool's tables as `db upgrade` creates them, and the default application tables."""
    from jobs.app_tables import create_default_tables
    from jobs.db import make_engine
    from jobs.schema import upgrade

    eng = make_engine(url)
    upgrade(eng)
    create_default_tables(eng)
    eng.dispose()


@pytest.fixture
def engine(request: pytest.FixtureRequest, db_url: str):
    from jobs.db import make_engine

    if db_url.startswith("sqlite"):
        _standard_tables(db_url)
    else:
        request.getfixturevalue("pg_database" if db_url.startswith("postgresql") else "mysql_database").standard(
            _standard_tables)
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@dataclass
class Workspace:
    """A temporary working directory with a config file, a database URL and a lock folder."""

    path: Path
    db_url: str
    plugins: bool = False

    @property
    def config_file(self) -> Path:
        return self.path / "cronwarden.toml"

    def write_config(self, text: str) -> None:
        self.config_file.write_text(text, encoding="utf-8")

    def upgrade(self) -> Workspace:
        """The tool's tables, as `db upgrade` creates them at deploy time (a job run creates none on a server)."""
        from jobs.db import make_engine
        from jobs.schema import upgrade

        eng = make_engine(self.db_url)
        upgrade(eng)
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

    def popen(self, *args: str, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=self.path, env=env or self.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """The real CLI as a separate process (locks, signals, crashes need real processes)."""
        return subprocess.run([sys.executable, "-m", "cli", *args], cwd=self.path, env=env or self.env(),
                              capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def workspace(tmp_path: Path, db_url: str, engine) -> Workspace:
    ws = Workspace(tmp_path, db_url)
    ws.write_config("")
    return ws


@pytest.fixture
def plugin_workspace(workspace: Workspace) -> Workspace:
    """A workspace whose CLI also sees the test jobs of tests/plugin_pkg (a user's own package)."""
    workspace.plugins = True
    return workspace


@pytest.fixture
def sqlite_workspace(tmp_path: Path, sqlite_url: str) -> Workspace:
    from jobs.app_tables import create_default_tables
    from jobs.db import make_engine
    from jobs.schema import upgrade

    eng = make_engine(sqlite_url)
    upgrade(eng)
    create_default_tables(eng)
    eng.dispose()
    ws = Workspace(tmp_path, sqlite_url)
    ws.write_config("")
    return ws


def refusing_table(db_url: str, name: str = "nope") -> None:
    """A token table with an expired row that cannot be deleted: refresh-token-cleanup pointed at it passes its
    checks and fails while it runs (an SQLite trigger, a foreign key elsewhere; each error names the table)."""
    from jobs.db import make_engine

    eng = make_engine(db_url)
    stamp = "DATETIME" if eng.dialect.name in ("mysql", "mariadb") else "TIMESTAMP"
    with eng.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, expires_at {stamp})")
        conn.exec_driver_sql(f"INSERT INTO {name} (id, expires_at) VALUES (1, '2000-01-01 00:00:00')")
        if eng.dialect.name == "sqlite":
            conn.exec_driver_sql(f"CREATE TRIGGER {name}_refuses BEFORE DELETE ON {name} "
                                 f"BEGIN SELECT RAISE(ABORT, '{name} refuses deletes'); END")
        else:
            conn.exec_driver_sql(f"CREATE TABLE {name}_child (id INTEGER PRIMARY KEY, parent INTEGER, "
                                 f"FOREIGN KEY (parent) REFERENCES {name} (id))")
            conn.exec_driver_sql(f"INSERT INTO {name}_child (id, parent) VALUES (1, 1)")
    eng.dispose()


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path) -> Callable[..., Result]:
    """The CLI in this process (so time-machine applies): cli(ws, *args) -> Result."""

    def invoke(ws: Workspace, *args: str, env: dict[str, str] | None = None) -> Result:
        from cli.app import main

        for key in [k for k in os.environ if k.startswith("CRONWARDEN_")]:
            monkeypatch.delenv(key)
        for key, value in ws.env(**(env or {})).items():
            if key.startswith("CRONWARDEN_") or key == "NO_COLOR":
                monkeypatch.setenv(key, value)
        monkeypatch.chdir(ws.path)
        if ws.plugins:
            monkeypatch.syspath_prepend(str(PLUGINS))
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return invoke


@dataclass
class SilentServer:
    """A loopback TCP port that accepts every connection and never sends a byte."""

    port: int
    accepted: list

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    """A real socket that accepts and stays silent (a hung database, mail server or HTTP endpoint)."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.1)
    server = SilentServer(listener.getsockname()[1], [])
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            server.accepted.append(conn)  # kept open, never read from or written to

    thread = threading.Thread(target=accept, name="silent-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join()
        listener.close()
        for conn in server.accepted:
            conn.close()


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace (no routes, loopback down): every connect fails with ENETUNREACH.

    Needs root and iproute2: skipped with the reason otherwise, except under CI=true (CI runs as root).
    """
    import shutil

    reason = "needs root" if os.geteuid() != 0 else "needs iproute2 (ip)" if shutil.which("ip") is None else None
    if reason is not None:
        if CI:
            raise RuntimeError(f"network namespace tests must run under CI=true: {reason}")
        pytest.skip(f"network namespace: {reason}")
    name = f"cw-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
