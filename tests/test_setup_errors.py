"""Setup mistakes are named in one line with their fix (exit 78), never "unexpected", and a command that only
reads never creates a database file or a table, so `check` cannot report OK against an empty database."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone

import pytest
from sqlalchemy import inspect, text

from tests.conftest import Workspace

READ_ONLY = [("status",), ("check",), ("history",), ("metrics",), ("queue", "list"), ("queue", "show", "1")]


def tables(url: str) -> set[str]:
    from jobs.db import make_engine

    eng = make_engine(url)
    try:
        with eng.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        eng.dispose()


def bare(tmp_path, url: str = "sqlite:///cronwarden.db") -> Workspace:
    """An empty working directory, as in `cd "$(mktemp -d)"`; its (empty) config file lives outside it."""
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cronwarden.toml").write_text("")
    ws = Workspace(tmp_path / "cwd", url)
    ws.env = lambda **extra: Workspace.env(ws, CRONWARDEN_CONFIG=str(tmp_path / "cronwarden.toml"), **extra)
    return ws


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("command", [*READ_ONLY, ("emails", "list")], ids=" ".join)
def test_a_read_only_command_in_an_empty_directory_creates_nothing_and_says_what_to_do(tmp_path, cli, command):
    ws = bare(tmp_path)
    result = cli(ws, *command)
    assert result.exit_code == 78 and result.stdout == ""
    line = one_line(result)
    assert "sqlite:///cronwarden.db" in line and str(ws.path / "cronwarden.db") in line
    assert "cronwarden db upgrade" in line and "CRONWARDEN_DATABASE_URL" in line
    assert os.listdir(ws.path) == []


def test_list_needs_no_database_and_creates_none(tmp_path, cli):
    ws = bare(tmp_path)
    result = cli(ws, "list")
    assert result.exit_code == 0 and os.listdir(ws.path) == []


@pytest.mark.parametrize("command", READ_ONLY, ids=" ".join)
def test_a_read_only_command_on_a_database_without_the_tool_tables_creates_none(tmp_path, cli, db_url, command):
    from jobs.db import make_engine

    make_engine(db_url).dispose()  # an SQLite file exists, empty; the servers' databases are empty
    ws = Workspace(tmp_path, db_url)
    ws.write_config("")
    result = cli(ws, *command)
    assert result.exit_code == 78
    line = one_line(result)
    assert "has no cronwarden tables" in line and "run `cronwarden db upgrade`" in line
    assert tables(db_url) == set()


def test_the_password_in_a_database_url_is_masked_in_the_setup_line(tmp_path, cli, pg_url):
    url = pg_url.replace("postgres@", "postgres:pw-marker-4242@")
    result = cli(bare(tmp_path, url), "check")
    assert result.exit_code == 78 and "pw-marker-4242" not in result.stderr and "postgres:***@" in result.stderr


@pytest.fixture(params=["pg_url", "mysql_url"])
def server_url(request) -> str:
    return request.getfixturevalue(request.param)


def test_a_job_run_on_a_server_without_the_tool_tables_refuses_and_names_db_upgrade(tmp_path, cli, server_url):
    ws = Workspace(tmp_path, server_url)
    ws.write_config("")
    result = cli(ws, "refresh-token-cleanup")
    assert result.exit_code == 78
    assert "has no cronwarden tables (run `cronwarden db upgrade`" in one_line(result)
    assert tables(server_url) == set()


def test_a_job_run_on_a_fresh_sqlite_file_creates_the_tool_tables(tmp_path, cli):
    ws = bare(tmp_path)
    (tmp_path / "cronwarden.toml").write_text('[jobs.log-cleanup]\ntable = ""\n')  # log files only
    result = cli(ws, "log-cleanup", "--json")
    assert result.exit_code == 0, result.stderr
    assert "recurring_job_executions" in tables(f"sqlite:///{ws.path / 'cronwarden.db'}")


def test_tool_tables_of_an_older_version_are_named_and_left_alone(workspace, cli, engine):
    with engine.begin() as conn:  # a version 2 database: no first_seen_at yet
        conn.exec_driver_sql("ALTER TABLE recurring_job_executions DROP COLUMN first_seen_at")
        conn.exec_driver_sql("UPDATE cronwarden_schema SET version = 2")
    for command in ("check", "log-cleanup"):
        result = cli(workspace, command)
        assert result.exit_code == 78
        assert "holds the tables of an older cronwarden (run `cronwarden db upgrade`" in one_line(result)
    with engine.connect() as conn:
        assert "first_seen_at" not in {c["name"] for c in inspect(conn).get_columns("recurring_job_executions")}
        assert conn.exec_driver_sql("SELECT version FROM cronwarden_schema").scalar() == 2


@pytest.mark.parametrize("command", [("check",), ("refresh-token-cleanup",), ("db", "upgrade")], ids=" ".join)
def test_a_database_that_does_not_exist_is_one_line_exit_78(tmp_path, cli, server_url, command):
    from sqlalchemy.engine import make_url

    url = make_url(server_url).set(database="cw_no_such_db")
    if url.get_backend_name() == "postgresql":  # trust authentication ignores it; MariaDB's root has none
        url = url.set(password="pw-marker-5151")
    ws = Workspace(tmp_path, url.render_as_string(hide_password=False))
    ws.write_config("")
    result = cli(ws, *command)
    assert result.exit_code == 78
    line = one_line(result)
    assert "database 'cw_no_such_db' does not exist" in line and "pw-marker-5151" not in line
    assert "unexpected" not in line


def test_a_job_refuses_a_missing_table_before_recording_its_run(workspace, cli):
    workspace.write_config('[jobs.ip-anonymization]\ntable = "people"\n')
    result = cli(workspace, "ip-anonymization", "--force")
    assert result.exit_code == 78
    assert one_line(result) == (
        "cronwarden: error: configuration: ip-anonymization: table people does not exist (create the default "
        "tables with `cronwarden db upgrade --app-tables`, or point [jobs.ip-anonymization] at your schema "
        "with its `table` and column settings)")
    assert json.loads(cli(workspace, "history", "--json").stdout)["runs"] == []
    dry = cli(workspace, "ip-anonymization", "--dry-run")
    assert dry.exit_code == 78 and "table people does not exist" in dry.stderr


def test_a_job_names_the_columns_its_table_lacks(workspace, cli):
    workspace.write_config('[jobs.refresh-token-cleanup]\nexpires_column = "valid_until"\n')
    result = cli(workspace, "refresh-token-cleanup", "--force")
    assert result.exit_code == 78
    assert "refresh-token-cleanup: table refresh_tokens has no column valid_until" in one_line(result)


def test_an_email_queue_of_an_older_schema_is_refused_then_fixed_by_db_upgrade_app_tables(workspace, cli, engine):
    with engine.begin() as conn:
        for column in ("claimed_by", "claimed_at"):
            conn.exec_driver_sql(f"ALTER TABLE email_queue DROP COLUMN {column}")
        conn.execute(text("INSERT INTO email_queue (to_address, subject, body) VALUES ('a@example.com', 'Hi', 'x')"))
    workspace.write_config('[jobs.email-queue]\ntransport = "file"\n')
    refused = cli(workspace, "email-queue", "--force")
    assert refused.exit_code == 78
    line = one_line(refused)
    assert "email-queue: table email_queue has no column claimed_by, claimed_at" in line
    assert "`cronwarden db upgrade --app-tables`" in line
    assert json.loads(cli(workspace, "history", "--json").stdout)["runs"] == []
    upgraded = cli(workspace, "db", "upgrade", "--app-tables")
    assert "added column email_queue.claimed_by" in upgraded.stdout
    sent = cli(workspace, "email-queue", "--force", "--json")
    assert sent.exit_code == 0, sent.stderr
    assert json.loads(sent.stdout)["counts"]["sent"] == 1


def test_a_plugin_job_declares_the_tables_it_needs(plugin_workspace, cli):
    result = cli(plugin_workspace, "test-needs")
    assert result.exit_code == 78
    assert "test-needs: table sessions does not exist" in one_line(result)


def test_a_job_reflects_its_tables_once_per_run_never_per_batch(workspace, cli, engine, monkeypatch):
    from sqlalchemy.engine.reflection import Inspector

    from jobs.app_tables import default_metadata

    users = default_metadata().tables["users"]
    with engine.begin() as conn:
        conn.execute(users.insert(), [{"username": f"u{i}", "email": "x@example.com", "password_hash": "h",
                                       "last_login_ip": "203.0.113.9", "last_login_at": datetime(2000, 1, 1,
                                                                                                tzinfo=timezone.utc),
                                       "created_at": datetime(2000, 1, 1, tzinfo=timezone.utc)} for i in range(30)])
    reflected = []
    real = Inspector.get_columns
    monkeypatch.setattr(Inspector, "get_columns", lambda self, table, *a, **kw: reflected.append(table)
                        or real(self, table, *a, **kw))
    result = cli(workspace, "ip-anonymization", "--batch-size", "4", "--force", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["counts"]["anonymized"] == 30 and report["transactions"] >= 8
    assert reflected == ["users"]
