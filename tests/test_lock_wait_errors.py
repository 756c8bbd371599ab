"""A lock wait that times out on the real servers is transient (retried in-process), whatever driver
details come with it (PyMySQL sets a generic SQLSTATE HY000 besides MySQL's own error number)."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from jobs.errors import Kind, classify


def _lock_wait_timeout(url: str, timeout_sql: str) -> OperationalError:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE held (id INTEGER PRIMARY KEY)"))
        conn.execute(text("INSERT INTO held (id) VALUES (1)"))
    with engine.connect() as holder, engine.connect() as waiter:
        holder.begin()
        holder.execute(text("UPDATE held SET id = id"))
        waiter.begin()
        waiter.execute(text(timeout_sql))
        with pytest.raises(OperationalError) as caught:
            waiter.execute(text("UPDATE held SET id = id"))
    engine.dispose()
    return caught.value


def test_mariadb_lock_wait_timeout_is_transient(mysql_url):
    error = _lock_wait_timeout(mysql_url, "SET SESSION innodb_lock_wait_timeout = 1")
    assert error.orig.args[0] == 1205
    assert classify(error) is Kind.TRANSIENT


def test_postgres_lock_timeout_is_transient(pg_url):
    error = _lock_wait_timeout(pg_url, "SET LOCAL lock_timeout = '200ms'")
    assert error.orig.sqlstate == "55P03"
    assert classify(error) is Kind.TRANSIENT
