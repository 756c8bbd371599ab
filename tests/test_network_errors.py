"""Network-level failures are temporary on every driver: a host whose network is down, a route that is
missing, a peer that reset or timed out. Retried, then exit 75 with one line."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time

import pytest

from jobs.errors import is_transient
from tests.conftest import MYSQL_ADMIN_URL, PG_ADMIN_URL, REPO

NETWORK_ERRNOS = ["ENETUNREACH", "EHOSTUNREACH", "EHOSTDOWN", "ENETDOWN", "ECONNRESET", "ETIMEDOUT"]


@pytest.mark.parametrize("name", NETWORK_ERRNOS)
def test_an_os_level_network_error_is_transient(name):
    code = getattr(errno, name)
    assert is_transient(OSError(code, os.strerror(code)))


@pytest.mark.parametrize("text", [
    'connection is bad: connection to server at "10.0.0.9", port 5432 failed: Network is unreachable',
    'connection to server at "10.0.0.9", port 5432 failed: No route to host',
    'connection to server at "10.0.0.9", port 5432 failed: Host is down',
    "could not receive data from server: Connection timed out",
    "consuming input failed: Connection reset by peer",
])
def test_libpq_network_failures_without_a_sqlstate_are_transient(text):
    import psycopg
    from sqlalchemy.exc import OperationalError

    assert is_transient(OperationalError("SELECT 1", {}, psycopg.OperationalError(text)))


def test_a_pymysql_connect_failure_with_an_errno_text_is_transient():
    import pymysql
    from sqlalchemy.exc import OperationalError

    orig = pymysql.err.OperationalError(2003, "Can't connect to MySQL server on '10.0.0.9' ([Errno 113] No route to host)")
    assert is_transient(OperationalError("SELECT 1", {}, orig))


@pytest.mark.parametrize("admin_url", [PG_ADMIN_URL, MYSQL_ADMIN_URL], ids=["postgres", "mariadb"])
def test_a_host_without_a_network_retries_then_exits_75_with_one_line(netns, tmp_path, admin_url):
    """Inside a fresh network namespace even loopback is down: connect() fails with ENETUNREACH."""
    (tmp_path / "cronwarden.toml").write_text('[retry]\nattempts = 3\ninitial_wait = "0.1s"\nmax_time = "2s"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONWARDEN_")}
    env.update(CRONWARDEN_DATABASE_URL=admin_url, CRONWARDEN_CONFIG=str(tmp_path / "cronwarden.toml"),
               PYTHONPATH=str(REPO), NO_COLOR="1")
    command = ["ip", "netns", "exec", netns, sys.executable, "-m", "cli"]
    started = time.monotonic()
    quiet = subprocess.run([*command, "--quiet", "check"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=60)
    elapsed = time.monotonic() - started
    loud = subprocess.run([*command, "check"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert quiet.returncode == 75, quiet.stderr
    lines = quiet.stderr.strip().splitlines()
    assert len(lines) == 1 and "database unreachable" in lines[0], quiet.stderr
    assert "network is unreachable" in lines[0].lower(), lines[0]
    assert "failed again (attempt 3)" in loud.stderr, loud.stderr
    assert elapsed < 2 + 5, elapsed
