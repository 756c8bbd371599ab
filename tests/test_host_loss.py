"""Every session asks the server to notice a vanished client within [locks] host_loss_bound / 2,
and the lock sessions survive being idle as long as their holder lives (real servers)."""

from __future__ import annotations

import json
import time
import tomllib
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from jobs.errors import is_transient
from jobs.host_loss import HostLossBounds

SHORT = HostLossBounds(8)  # idle_in_transaction / wait_timeout 4 s, lock pings every 1.3 s


def _config(url: str, bound: str, tmp_path):
    from jobs import config as config_mod
    from jobs.registry import builtin_specs

    raw = tomllib.loads(f'[locks]\nhost_loss_bound = "{bound}"\n')
    return config_mod.load(raw, builtin_specs(), environ={"CRONWARDEN_LOCK_DIR": str(tmp_path)}, database_url=url)


def _engine(url: str, bounds: HostLossBounds = SHORT):
    from jobs.db import make_engine
    from jobs.schema import upgrade

    engine = make_engine(url, bounds=bounds)
    upgrade(engine)
    return engine


@pytest.fixture
def pg_role_url(pg_url: str):
    """The test database through a freshly created role without superuser rights."""
    role = f"cw_role_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN NOSUPERUSER"))
        conn.execute(text(f"GRANT ALL ON SCHEMA public TO {role}"))
    yield make_url(pg_url).set(username=role, password=None).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"), {"r": role})
        conn.execute(text(f"DROP OWNED BY {role}"))
        conn.execute(text(f"DROP ROLE {role}"))
    admin.dispose()


def test_the_derived_values_follow_the_bound():
    default = HostLossBounds()
    assert default.postgres_server() == {
        "tcp_keepalives_idle": 15, "tcp_keepalives_interval": 5, "tcp_keepalives_count": 3,
        "tcp_user_timeout": 30_000, "idle_in_transaction_session_timeout": 30_000}
    assert default.mysql_server() == {"net_read_timeout": 30, "net_write_timeout": 30, "wait_timeout": 30,
                                      "innodb_lock_wait_timeout": 15}
    assert default.mysql_client() == {"connect_timeout": 5, "read_timeout": 30, "write_timeout": 30}
    for bound in (8, 9, 12, 13, 60, 61, 600, 3600):
        b = HostLossBounds(bound)
        keepalive = b.keepalives_idle + 3 * b.keepalives_interval
        assert keepalive <= b.notice and b.tcp_user_timeout_ms <= b.notice * 1000, bound
        assert b.lock_wait_timeout < b.mysql_client()["read_timeout"], "the server answers a lock wait first"
        assert b.lock_ping_seconds < b.net_timeout, "a live lock session is never idle past wait_timeout"


@pytest.mark.parametrize("url,dialect", [("postgresql://u@db.internal/app", "postgresql"),
                                         ("mysql://u@db.internal/app", "mysql")])
def test_list_json_prints_the_values_derived_from_host_loss_bound(sqlite_workspace, cli, url, dialect):
    sqlite_workspace.write_config('[locks]\nhost_loss_bound = "12s"\n')
    result = cli(sqlite_workspace, "list", "--json", env={"CRONWARDEN_DATABASE_URL": url})
    assert result.exit_code == 0, result.stderr
    locks = json.loads(result.stdout)["locks"]
    assert locks["host_loss_bound_seconds"] == 12 and locks["notice_seconds"] == 6
    assert locks["server_session"] == HostLossBounds(12).describe(dialect)["server_session"]
    if dialect == "postgresql":
        assert locks["backend"] == "postgres"
        assert locks["server_session"]["tcp_keepalives_idle"] == 3
        assert locks["client"]["tcp_user_timeout"] == 6000
    else:
        assert locks["backend"] == "mysql"
        assert locks["server_session"]["wait_timeout"] == 6 and locks["client"]["read_timeout"] == 6


def test_a_postgres_session_of_a_non_superuser_sets_its_keepalives_and_timeouts(pg_role_url):
    engine = _engine(pg_role_url, HostLossBounds(12))
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar() is False
            shown = {name: conn.execute(text(f"SHOW {name}")).scalar() for name in HostLossBounds(12).postgres_server()}
            client = conn.connection.driver_connection.info.get_parameters()
    finally:
        engine.dispose()
    assert shown == {"tcp_keepalives_idle": "3", "tcp_keepalives_interval": "1", "tcp_keepalives_count": "3",
                     "tcp_user_timeout": "6000", "idle_in_transaction_session_timeout": "6s"}
    assert client["tcp_user_timeout"] == "6000" and client["keepalives_idle"] == "3"


def test_a_postgres_url_keeps_its_own_options_and_parameters(pg_url):
    url = make_url(pg_url).update_query_dict({"options": "-c search_path=public -c tcp_keepalives_count=7",
                                              "keepalives_idle": "9"})
    engine = _engine(url.render_as_string(hide_password=False))
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW search_path")).scalar() == "public"
            assert conn.execute(text("SHOW tcp_keepalives_count")).scalar() == "7"
            assert conn.execute(text("SHOW tcp_user_timeout")).scalar() == "4000"
            assert conn.connection.driver_connection.info.get_parameters()["keepalives_idle"] == "9"
    finally:
        engine.dispose()

@pytest.mark.slow

def test_an_idle_transaction_is_ended_by_the_server_but_the_idle_advisory_lock_session_is_not(pg_url, tmp_path):
    from jobs.locks import backend_for

    engine = _engine(pg_url)
    other = _engine(pg_url)
    backend = backend_for(_config(pg_url, "8s", tmp_path), engine)
    rival = backend_for(_config(pg_url, "8s", tmp_path), other)
    held = backend.try_acquire("job-a", timedelta(minutes=1))
    try:
        assert held is not None
        with engine.connect() as conn:
            assert conn.execute(text("SHOW idle_session_timeout")).scalar() == "0"  # as on the lock session
            conn.execute(text("SELECT 1"))  # a transaction is open, then its client goes quiet
            time.sleep(SHORT.notice + 1)
            with pytest.raises(Exception) as caught:
                conn.execute(text("SELECT 1"))
        assert is_transient(caught.value), caught.value
        held.verify(None)
        assert rival.try_acquire("job-a", timedelta(minutes=1)) is None
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        held.release()
        engine.dispose()
        other.dispose()


def test_every_mariadb_session_sets_its_timeouts(mysql_url):
    engine = _engine(mysql_url, HostLossBounds(12))
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT @@session.net_read_timeout, @@session.net_write_timeout, "
                                    "@@session.wait_timeout, @@session.innodb_lock_wait_timeout")).one()
            driver = conn.connection.driver_connection
    finally:
        engine.dispose()
    assert tuple(row) == (6, 6, 6, 3)
    assert (driver.connect_timeout, driver._read_timeout, driver._write_timeout) == (2, 6, 6)

@pytest.mark.slow

def test_the_get_lock_session_outlives_wait_timeout_while_its_holder_lives(mysql_url, tmp_path):
    """The server ends idle sessions after wait_timeout (a vanished holder's too); the live holder's
    lock session is pinged, and a pooled session the server ended is replaced on checkout."""
    from jobs.locks import backend_for
    from jobs.locks.mysql import lock_name

    engine = _engine(mysql_url)
    backend = backend_for(_config(mysql_url, "8s", tmp_path), engine)
    with engine.connect() as conn:
        pooled = conn.execute(text("SELECT CONNECTION_ID()")).scalar()
    held = backend.try_acquire("job-a", timedelta(minutes=1))
    try:
        assert held is not None
        time.sleep(SHORT.net_timeout + 1.5)
        held.verify(None)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT CONNECTION_ID()")).scalar() != pooled
            name = lock_name("job-a", engine.url.database)
            assert conn.execute(text("SELECT IS_USED_LOCK(:n)"), {"n": name}).scalar() is not None
    finally:
        held.release()
        engine.dispose()


def test_a_mariadb_row_lock_wait_ends_within_its_bound_as_a_retryable_error(mysql_url):
    engine = _engine(mysql_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (id INT PRIMARY KEY) ENGINE=InnoDB"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
        with engine.connect() as holder, engine.connect() as waiter:
            holder.begin()
            holder.execute(text("UPDATE t SET id = 1 WHERE id = 1"))
            waiter.begin()
            started = time.monotonic()
            with pytest.raises(Exception) as caught:
                waiter.execute(text("UPDATE t SET id = 1 WHERE id = 1"))
            waited = time.monotonic() - started
            holder.rollback()
    finally:
        engine.dispose()
    assert is_transient(caught.value), caught.value
    assert SHORT.lock_wait_timeout - 0.5 <= waited < SHORT.mysql_client()["read_timeout"], waited


def test_a_mariadb_url_init_command_keeps_its_own_values(mysql_url):
    url = make_url(mysql_url).update_query_dict({"init_command": "SET SESSION innodb_lock_wait_timeout = 1"})
    engine = _engine(url.render_as_string(hide_password=False), HostLossBounds(12))
    try:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT @@session.innodb_lock_wait_timeout, @@session.wait_timeout")).one()
    finally:
        engine.dispose()
    assert tuple(row) == (1, 6)
