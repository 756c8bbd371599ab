"""MariaDB connections: PyMySQL's opportunistic TLS without loading the system's certificate store."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys

import pymysql
from sqlalchemy.engine import make_url

from jobs.mysql_driver import connect, connection_class
from tests.conftest import REPO

SYSTEM_CAS = "/etc/ssl/certs/ca-certificates.crt"


def _args(url: str) -> dict:
    u = make_url(url)
    return {"host": u.host, "port": u.port or 3306, "user": u.username, "password": u.password or "",
            "database": u.database}


def test_the_quick_path_connection_verifies_as_pymysql_would_without_reading_the_store(mysql_url: str) -> None:
    ours, theirs = connect(**_args(mysql_url)), pymysql.connect(**_args(mysql_url))
    try:
        assert ours.ssl is theirs.ssl is True and ours._ssl_required is theirs._ssl_required is False  # PREFERRED
        assert (ours.ctx.verify_mode, ours.ctx.check_hostname) == (theirs.ctx.verify_mode, theirs.ctx.check_hostname) \
            == (ssl.CERT_NONE, False)
        assert ours.ctx.cert_store_stats()["x509_ca"] == 0
        assert theirs.ctx.cert_store_stats()["x509_ca"] > 0, "PyMySQL no longer reads the store: drop jobs.mysql_driver"
        with ours.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        ours.close()
        theirs.close()


def test_engines_connect_through_it(mysql_url: str) -> None:
    """In a process of its own: this one's engines connect the same way (tests/conftest.py), which would hide
    an engine that does not."""
    probe = ("import sys\nfrom jobs.db import make_engine\nengine = make_engine(sys.argv[1])\n"
             "with engine.connect() as conn:\n    raw = conn.connection.dbapi_connection\n"
             "    print(type(raw).__name__, raw.ctx.cert_store_stats()['x509_ca'])\n")
    out = subprocess.run([sys.executable, "-c", probe, mysql_url], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.split() == [connection_class().__name__, "0"], out.stderr


def test_a_tls_option_given_is_left_to_pymysql() -> None:
    unconnected = object.__new__(connection_class())
    ctx = unconnected._create_ssl_ctx({"ca": SYSTEM_CAS, "check_hostname": True})
    assert (ctx.verify_mode, ctx.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert ctx.cert_store_stats()["x509_ca"] > 0
