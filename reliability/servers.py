"""Private PostgreSQL and MariaDB servers that a script may stop, kill and start at will.

The servers on 5432/3306 are shared, so a fault that takes a whole server down needs one of its
own: a fresh data directory in a temporary folder, a free port on 127.0.0.1 (and, when asked, on one
more address of this machine, e.g. a bridge that network namespaces reach it through, trusting that
address's /24), nothing else on the machine touched. As root the servers run as their packages' users (PostgreSQL refuses root):
initdb and postgres are started as `postgres`, mariadbd with `--user=mysql`. Each server process is a
child of the script, so it is reaped the moment it dies and can be started again at once.

    with private_server("postgres") as server:
        url = server.url            # the superuser's URL (postgres / root, no password)
        server.stop()               # a clean shutdown: sessions ended, their transactions rolled back
        server.start()              # same port, same data
        server.kill()               # SIGKILL: the next start recovers from the log
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

KINDS = ("postgres", "mariadb")
READY_SECONDS = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _mariadb_programs() -> tuple[str, str] | None:
    server = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin:/usr/local/sbin") \
        or shutil.which("mysqld", path=os.environ.get("PATH", "") + ":/usr/sbin")
    install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
    return (server, install) if server and install else None


def _user(kind: str) -> str | None:
    """The user a server runs as when this process is root, None when it runs as this process's user."""
    if os.geteuid() != 0:
        return None
    name = "postgres" if kind == "postgres" else "mysql"
    try:
        pwd.getpwnam(name)
    except KeyError:
        return None
    return name


def unavailable(kind: str) -> str | None:
    """None when a private server of this kind can be run here, else why not."""
    if kind == "postgres":
        if _postgres_bin() is None:
            return "no PostgreSQL server programs (initdb, pg_ctl) installed"
        if os.geteuid() == 0 and _user(kind) is None:
            return "running as root, and there is no 'postgres' user to run PostgreSQL as"
        return None
    if kind == "mariadb":
        return None if _mariadb_programs() else "no MariaDB server programs (mariadbd, mariadb-install-db) installed"
    return f"unknown server kind {kind!r}"


class PrivateServer:
    """One server of its own: a data directory, a port, start/stop/kill, the superuser's URL."""

    def __init__(self, kind: str, root: Path, also_on: str | None = None) -> None:
        self.kind = kind
        self.root = root
        self.also_on = also_on
        self.port = _free_port()
        self.user = _user(kind)
        self._proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        if self.kind == "postgres":
            return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/mysql"

    @property
    def addresses(self) -> str:
        return ",".join(["127.0.0.1"] + ([self.also_on] if self.also_on else []))

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / ("server.out" if self.kind == "postgres" else "server.log")

    # ------------------------------------------------------------ lifecycle

    def init(self) -> None:
        """Create the data directory (a second or two)."""
        if self.user:
            shutil.chown(self.root, self.user, self.user)
        if self.kind == "postgres":
            self._run([str(_postgres_bin() / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                       "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"], as_user=True)
            if self.also_on:
                subnet = self.also_on.rsplit(".", 1)[0] + ".0/24"
                with open(self.data / "pg_hba.conf", "a", encoding="utf-8") as hba:
                    hba.write(f"host all all {subnet} trust\n")
        else:
            _, install = _mariadb_programs()  # type: ignore[misc]
            self._run([install, "--no-defaults", f"--datadir={self.data}", "--auth-root-authentication-method=normal",
                       "--skip-test-db", *([f"--user={self.user}"] if self.user else [])])

    def start(self) -> None:
        """Start on the same port and data; returns once the server takes connections."""
        if self.kind == "postgres":
            cmd = [str(_postgres_bin() / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.root),
                   "-c", f"listen_addresses={self.addresses}", "-c", "fsync=off", "-c", "shared_buffers=32MB",
                   "-c", "max_connections=60"]
        else:
            server, _ = _mariadb_programs()  # type: ignore[misc]
            cmd = [server, "--no-defaults", f"--datadir={self.data}", f"--port={self.port}",
                   f"--socket={self.root / 'mysqld.sock'}", f"--bind-address={self.addresses}",
                   f"--pid-file={self.root / 'mysqld.pid'}", f"--log-error={self.log}", "--skip-name-resolve",
                   "--innodb-buffer-pool-size=64M", "--innodb-flush-log-at-trx-commit=2", "--max-connections=100",
                   *([f"--user={self.user}"] if self.user else [])]
        with open(self.root / "server.out", "ab") as out:
            # Our own child, so that it is reaped at once when it dies: a zombie postmaster's pid would
            # still look alive to the next start. mariadbd drops to its user itself.
            as_user = {"user": self.user, "group": self.user} if self.user and self.kind == "postgres" else {}
            self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True, **as_user)
        self._wait_ready()
        self.starts += 1

    def stop(self) -> None:
        """A clean shutdown: PostgreSQL's fast mode / mariadbd on SIGTERM end every session (their
        transactions roll back) and close the port."""
        if self._proc is None:
            return
        # SIGINT is PostgreSQL's fast shutdown; SIGTERM is mariadbd's normal one.
        self._proc.send_signal(signal.SIGINT if self.kind == "postgres" else signal.SIGTERM)
        try:
            self._proc.wait(timeout=READY_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL the server and every process of it: a crash; the next start recovers."""
        if self._proc is None:
            return
        victims = _children(self._proc.pid) if self.kind == "postgres" else []
        self._proc.kill()
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._proc.wait()
        self._proc = None
        deadline = time.monotonic() + READY_SECONDS
        while any(_alive(p) for p in victims) and time.monotonic() < deadline:
            time.sleep(0.02)

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def close(self) -> None:
        """Gone for good: killed (its data is thrown away anyway) and its folder removed."""
        try:
            self.kill()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------ databases

    @contextmanager
    def database(self, password: str) -> Iterator[str]:
        """A new database and the URL to reach it with `password` in it (PostgreSQL's trust
        authentication ignores the password; MariaDB gets a user of its own with it)."""
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url
        from sqlalchemy.pool import NullPool

        name = f"cwpriv_{uuid.uuid4().hex[:10]}"
        admin = create_engine(self.url, isolation_level="AUTOCOMMIT", poolclass=NullPool,
                              connect_args={"connect_timeout": 5})
        url = make_url(self.url).set(database=name, password=password)
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
            if self.kind == "mariadb":
                user = name
                conn.execute(text(f"CREATE USER '{user}'@'%' IDENTIFIED BY :pw"), {"pw": password})
                conn.execute(text(f"GRANT ALL ON {name}.* TO '{user}'@'%'"))
                url = url.set(username=user)
        try:
            yield url.render_as_string(hide_password=False)
        finally:
            if self.running():
                with admin.connect() as conn:
                    force = " WITH (FORCE)" if self.kind == "postgres" else ""
                    conn.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))
                    if self.kind == "mariadb":
                        conn.execute(text(f"DROP USER IF EXISTS '{name}'@'%'"))
            admin.dispose()

    # ------------------------------------------------------------ plumbing

    def _run(self, cmd: list[str], as_user: bool = False) -> None:
        extra = {"user": self.user, "group": self.user} if as_user and self.user else {}
        done = subprocess.run(cmd, cwd=self.root, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=READY_SECONDS * 2, **extra)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(cmd[0]).name} failed ({done.returncode}): {(done.stderr or done.stdout)[-800:]}")

    def _wait_ready(self) -> None:
        """Until a connection succeeds (PostgreSQL refuses them while it recovers or starts up)."""
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        engine = create_engine(self.url, poolclass=NullPool, connect_args={"connect_timeout": 2})
        deadline = time.monotonic() + READY_SECONDS
        try:
            while True:
                if self._proc is not None and self._proc.poll() is not None:
                    log = self.log if self.log.exists() else self.root / "server.out"
                    raise RuntimeError(f"the {self.kind} server exited {self._proc.returncode}: "
                                       f"{log.read_text(errors='replace')[-800:] if log.exists() else ''}")
                try:
                    with engine.connect() as conn:
                        conn.execute(text("SELECT 1"))
                    return
                except Exception:  # noqa: BLE001 - not up yet
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the {self.kind} server did not take connections in time") from None
                    time.sleep(0.05)
        finally:
            engine.dispose()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return found


@contextmanager
def private_server(kind: str, also_on: str | None = None) -> Iterator[PrivateServer]:
    """A started server of its own, killed and removed on the way out."""
    why = unavailable(kind)
    if why:
        raise RuntimeError(why)
    server = PrivateServer(kind, Path(tempfile.mkdtemp(prefix=f"cw-{kind}-")), also_on)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.close()
