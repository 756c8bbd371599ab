"""ip-anonymization: exactly the logins at or past the cutoff lose their IP, in batches; twice changes nothing."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import time_machine
from sqlalchemy import insert, select, text

from jobs.app_tables import default_metadata

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
CUTOFF = NOW - timedelta(days=90)
users = default_metadata().tables["users"]


def _run(cli, ws, *args: str, code: int = 0) -> dict:
    with time_machine.travel(NOW, tick=False):
        result = cli(ws, "ip-anonymization", "--force", "--json", *args)
    assert result.exit_code == code, result.stderr
    return json.loads(result.stdout) if code == 0 else {"stderr": result.stderr}


def _add_users(engine, logins: dict[str, tuple[datetime | None, str | None]]) -> None:
    rows = [{"username": name, "email": f"{name}@example.com", "password_hash": "x", "is_admin": False,
             "last_login_at": at, "last_login_ip": ip, "created_at": NOW - timedelta(days=500)}
            for name, (at, ip) in logins.items()]
    with engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(insert(users), rows[start:start + 5000])


def _ips(engine) -> dict[str, str | None]:
    with engine.connect() as conn:
        return dict(conn.execute(select(users.c.username, users.c.last_login_ip)).all())


BOUNDARY_USERS = {
    "long-ago": (NOW - timedelta(days=400), "198.51.100.1"),
    "just-past": (CUTOFF - timedelta(microseconds=1), "2001:db8::1"),
    "at-cutoff": (CUTOFF, "198.51.100.3"),
    "just-inside": (CUTOFF + timedelta(seconds=1), "198.51.100.4"),
    "recent": (NOW - timedelta(days=1), "198.51.100.5"),
    "never-logged-in": (None, "198.51.100.6"),
    "old-already-null": (CUTOFF - timedelta(days=10), None),
}


def test_anonymizes_exactly_the_logins_at_or_before_the_cutoff(workspace, engine, cli):
    _add_users(engine, BOUNDARY_USERS)
    report = _run(cli, workspace)
    assert report["counts"] == {"anonymized": 3}
    assert _ips(engine) == {
        "long-ago": None, "just-past": None, "at-cutoff": None, "old-already-null": None,
        "just-inside": "198.51.100.4", "recent": "198.51.100.5", "never-logged-in": "198.51.100.6",
    }
    with engine.connect() as conn:
        logins = dict(conn.execute(select(users.c.username, users.c.last_login_at)).all())
    assert logins == {name: at for name, (at, _) in BOUNDARY_USERS.items()}


def test_a_second_run_changes_nothing_more(workspace, engine, cli):
    _add_users(engine, BOUNDARY_USERS)
    _run(cli, workspace)
    after_first = _ips(engine)
    assert _run(cli, workspace)["counts"] == {"anonymized": 0}
    assert _ips(engine) == after_first


def test_works_in_transactions_of_at_most_batch_size_rows(workspace, engine, cli):
    logins = {f"old{i}": (CUTOFF - timedelta(seconds=10 + i), f"10.0.{i // 256}.{i % 256}") for i in range(230)}
    logins |= {f"done{i}": (CUTOFF - timedelta(days=1, seconds=i), None) for i in range(20)}
    logins |= {f"new{i}": (CUTOFF + timedelta(seconds=60 + i), "192.0.2.7") for i in range(40)}
    _add_users(engine, logins)
    report = _run(cli, workspace, "--batch-size", "100")
    assert report["counts"] == {"anonymized": 230}
    assert report["transactions"] >= 3
    ips = _ips(engine)
    assert all(ips[name] is None for name in logins if not name.startswith("new"))
    assert all(ips[f"new{i}"] == "192.0.2.7" for i in range(40))


def test_dry_run_reports_the_same_count_and_changes_nothing(workspace, engine, cli):
    _add_users(engine, BOUNDARY_USERS)
    before = _ips(engine)
    report = _run(cli, workspace, "--dry-run", "--batch-size", "2")
    assert report["status"] == "dry_run" and report["counts"] == {"anonymized": 3}
    assert report["details"] == [f"would anonymize the last login IP of 3 users whose last login is at or "
                                 f"before {CUTOFF.isoformat()}"]
    assert _ips(engine) == before
    assert _run(cli, workspace)["counts"] == {"anonymized": 3}


def test_retention_days_option_moves_the_cutoff(workspace, engine, cli):
    _add_users(engine, BOUNDARY_USERS)
    assert _run(cli, workspace, "--retention-days", "500")["counts"] == {"anonymized": 0}
    assert _run(cli, workspace, "--retention-days", "1")["counts"] == {"anonymized": 5}
    assert _ips(engine)["never-logged-in"] == "198.51.100.6"


@pytest.mark.backend_neutral
def test_a_retention_below_one_day_is_a_configuration_error_and_touches_nothing(workspace, engine, cli):
    _add_users(engine, BOUNDARY_USERS)
    before = _ips(engine)
    workspace.write_config("[jobs.ip-anonymization]\nretention_days = 0\n")
    err = _run(cli, workspace, code=78)["stderr"]
    assert "retention_days" in err and "at least 1" in err
    assert _ips(engine) == before
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM job_runs")).scalar() == 0


@pytest.mark.backend_neutral
def test_a_retention_below_one_day_on_the_command_line_is_a_usage_error(workspace, engine, cli):
    _add_users(engine, BOUNDARY_USERS)
    before = _ips(engine)
    assert "--retention-days: must be at least 1" in _run(cli, workspace, "--retention-days", "0", code=2)["stderr"]
    assert _ips(engine) == before
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM job_runs")).scalar() == 0


def test_table_and_column_names_are_configurable(workspace, engine, cli):
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE members (member_no INTEGER PRIMARY KEY, seen_at TIMESTAMP NULL, "
                          "addr VARCHAR(45) NULL)"))
        conn.execute(text("INSERT INTO members (member_no, seen_at, addr) VALUES (1, :old, '192.0.2.1'), "
                          "(2, :new, '192.0.2.2'), (3, NULL, '192.0.2.3'), (4, :old, '192.0.2.4')"),
                     {"old": datetime(2025, 1, 1), "new": datetime(2026, 5, 30)})
    workspace.write_config('[jobs.ip-anonymization]\ntable = "members"\nip_column = "addr"\n'
                           'login_column = "seen_at"\nkey_column = "member_no"\nbatch_size = 1\n')
    assert _run(cli, workspace)["counts"] == {"anonymized": 2}
    with engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT member_no, addr FROM members")).all())
    assert rows == {1: None, 2: "192.0.2.2", 3: "192.0.2.3", 4: None}


@pytest.mark.backend_neutral
def test_a_table_name_that_is_not_an_identifier_is_refused(workspace, engine, cli):
    workspace.write_config('[jobs.ip-anonymization]\ntable = "users; DROP TABLE users"\n')
    assert "not a plain SQL identifier" in _run(cli, workspace, code=78)["stderr"]
