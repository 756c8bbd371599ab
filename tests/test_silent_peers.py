"""A peer that accepts the connection and never answers cannot hold a run: the database and the mail
server give exit 75 and one line within `[retry] max_time` plus one attempt's timeout; a Pushgateway,
a dead-man monitor or an OTLP collector gives a warning and leaves the run's outcome alone."""

from __future__ import annotations

import json
import select
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from jobs.host_loss import HostLossBounds
from tests.builtin.test_email_queue import add_emails

SLACK = 3.0  # what the CLI does besides the waiting (its imports are taken off by _timed), on a busy machine
DATABASES = {
    "postgres": ("postgresql://postgres@{address}/x", lambda b: b.connect_timeout),
    "mariadb": ("mysql://root@{address}/x", lambda b: b.mysql_client()["read_timeout"]),  # the handshake read
}


def _timed(ws, *args: str, env: dict | None = None, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    """The command's wall time, less what a command that waits on nothing (`list`) takes on this machine right
    now: what is left is the waiting the bound is about, however loaded the machine is."""
    started = time.monotonic()
    ws.run("list", env=env, timeout=timeout)
    startup = time.monotonic() - started
    started = time.monotonic()
    result = ws.run(*args, env=env, timeout=timeout)
    return result, max(0.0, time.monotonic() - started - startup)


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("database", DATABASES)
def test_a_silent_database_exits_75_with_one_line_within_the_retry_budget(sqlite_workspace, silent_server, database):
    url, attempt_timeout = DATABASES[database]
    sqlite_workspace.write_config('[retry]\nmax_time = "2s"\n\n[locks]\nhost_loss_bound = "8s"\n')
    env = sqlite_workspace.env(CRONWARDEN_DATABASE_URL=url.format(address=silent_server.address))
    result, elapsed = _timed(sqlite_workspace, "--quiet", "check", env=env, timeout=60)
    assert result.returncode == 75, result.stderr
    assert "database unreachable" in _one_line(result.stderr)
    assert elapsed <= 2 + attempt_timeout(HostLossBounds(8)) + SLACK, elapsed
    assert silent_server.accepted, "the CLI never reached the silent server"


@pytest.mark.reliability  # half a minute of waiting each: the short-settings test above covers the behaviour
@pytest.mark.parametrize("database", DATABASES)
def test_with_the_default_settings_a_silent_database_ends_the_run_within_60_seconds(sqlite_workspace, silent_server,
                                                                                   database):
    url, attempt_timeout = DATABASES[database]
    env = sqlite_workspace.env(CRONWARDEN_DATABASE_URL=url.format(address=silent_server.address))
    result, elapsed = _timed(sqlite_workspace, "--quiet", "check", env=env, timeout=120)
    assert result.returncode == 75, result.stderr
    assert "database unreachable" in _one_line(result.stderr)
    assert 30 + attempt_timeout(HostLossBounds()) <= 60
    assert elapsed <= 60, elapsed


def test_a_silent_mail_server_fails_the_run_with_exit_75_within_its_timeout(sqlite_workspace, silent_server):
    from jobs.db import make_engine

    host, port = silent_server.address.split(":")
    sqlite_workspace.write_config(f'[jobs.email-queue]\nsmtp_host = "{host}"\nsmtp_port = {port}\n'
                                  'smtp_timeout = "1s"\n')
    engine = make_engine(sqlite_workspace.db_url)
    add_emails(engine, 2)
    engine.dispose()
    result, elapsed = _timed(sqlite_workspace, "--quiet", "email-queue", "--force")
    assert result.returncode == 75, result.stderr
    line = _one_line(result.stderr)
    assert "cannot reach SMTP server" in line and "timed out" in line and "2 emails rescheduled" in line, line
    assert elapsed <= 1 + SLACK, elapsed

@pytest.mark.slow

def test_a_silent_pushgateway_is_a_warning_and_the_run_succeeds(sqlite_workspace, silent_server):
    from jobs.observe.metrics import PUSH_TIMEOUT

    result, elapsed = _timed(sqlite_workspace, "--pushgateway", f"http://{silent_server.address}",
                             "refresh-token-cleanup", "--force")
    assert result.returncode == 0, result.stderr
    assert "pushing metrics to the Pushgateway failed" in result.stderr and "timed out" in result.stderr
    assert elapsed <= PUSH_TIMEOUT + SLACK, elapsed


@pytest.mark.reliability  # the default ping budget, twice: twenty seconds of waiting
def test_a_silent_dead_man_monitor_is_a_warning_and_the_run_succeeds(sqlite_workspace, silent_server):
    from jobs.observe.pings import PingObserver

    sqlite_workspace.write_config(f'[jobs.refresh-token-cleanup]\nping_url = "http://{silent_server.address}/p"\n')
    result, elapsed = _timed(sqlite_workspace, "refresh-token-cleanup", "--force")
    history = sqlite_workspace.run("history", "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("not delivered") == 2, result.stderr  # the start and the success ping
    assert json.loads(history.stdout)["runs"][0]["status"] == "succeeded"
    assert elapsed <= 2 * PingObserver.budget + SLACK, elapsed

@pytest.mark.slow

def test_a_silent_otlp_collector_is_a_warning_and_the_run_succeeds(sqlite_workspace, silent_server):
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    from jobs.observe.tracing import FLUSH_TIMEOUT

    env = sqlite_workspace.env(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://{silent_server.address}")
    result, elapsed = _timed(sqlite_workspace, "refresh-token-cleanup", "--force", env=env)
    assert result.returncode == 0, result.stderr
    assert "traces not exported" in result.stderr, result.stderr
    assert silent_server.accepted, "the exporter never reached the silent collector"
    assert elapsed <= FLUSH_TIMEOUT + SLACK, elapsed



@contextmanager
def freezable_proxy(target: tuple[str, int]) -> Iterator[tuple[int, threading.Event]]:
    """A loopback TCP relay to `target` that, once the event is set, stops relaying in both
    directions while keeping every connection open: a server that falls silent mid-session."""
    frozen = threading.Event()
    closing = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    sockets: list[socket.socket] = [listener]

    def pump(src: socket.socket, dst: socket.socket) -> None:
        while not closing.is_set():
            readable = select.select([src], [], [], 0.05)[0]
            if frozen.is_set():  # what arrives stays unread, acknowledged by the kernel: silence
                time.sleep(0.05)
                continue
            if not readable:
                continue
            data = src.recv(65536)
            if not data:
                return
            dst.sendall(data)

    def accept() -> None:
        while not closing.is_set():
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            server = socket.create_connection(target)
            sockets.extend([client, server])
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1], frozen
    finally:
        closing.set()
        time.sleep(0.2)
        for sock in sockets:
            sock.close()

@pytest.mark.slow

def test_a_mariadb_server_that_falls_silent_mid_session_is_noticed_within_the_read_timeout(mysql_url):
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from jobs.db import make_engine
    from jobs.errors import is_transient

    url = make_url(mysql_url)
    bounds = HostLossBounds(8)
    with freezable_proxy((url.host, url.port or 3306)) as (port, frozen):
        engine = make_engine(url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False),
                             bounds=bounds)
        try:
            with engine.connect() as conn:
                assert conn.execute(text("SELECT 1")).scalar() == 1
                frozen.set()
                started = time.monotonic()
                with pytest.raises(Exception) as caught:
                    conn.execute(text("SELECT 2"))
                elapsed = time.monotonic() - started
        finally:
            engine.dispose()
    assert is_transient(caught.value), caught.value
    assert bounds.mysql_client()["read_timeout"] - 0.5 <= elapsed <= bounds.mysql_client()["read_timeout"] + 1, elapsed


def test_a_silent_pushgateway_costs_one_timeout_per_invocation_not_one_per_run(sqlite_workspace, silent_server, caplog):
    import tomllib

    from jobs import config as config_mod
    from jobs.app import App
    from jobs.observe.metrics import MetricsPublisher
    from jobs.registry import builtin_specs

    config = config_mod.load(tomllib.loads(""), builtin_specs(), environ=sqlite_workspace.env(),
                             database_url=sqlite_workspace.db_url)
    app = App(config)
    publisher = MetricsPublisher(app, pushgateway=f"http://{silent_server.address}", timeout=0.5)
    try:
        started = time.monotonic()
        for run_id in (1, 2, 3):
            publisher.publish("refresh-token-cleanup", run_id)
        elapsed = time.monotonic() - started
    finally:
        app.close()
    warnings = [r.getMessage() for r in caplog.records if "Pushgateway" in r.getMessage()]
    assert len(warnings) == 1 and "not tried again" in warnings[0], warnings
    assert elapsed < 0.5 + 0.5 * 2, elapsed
