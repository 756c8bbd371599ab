"""Every bad configuration is refused with one line naming the key, exit 78, nothing touched."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import func, select

from jobs.models import executions, runs

RTC = "[jobs.refresh-token-cleanup]\n"
BAD_CONFIGS = [
    ("unknown job", "[jobs.no-such-job]\nenabled = true\n", "no-such-job"),
    ("unknown key", RTC + "colour = 'blue'\n", "colour"),
    ("negative retention", RTC + "retention_days = -1\n", "retention_days"),
    ("zero retention", RTC + "retention_days = 0\n", "retention_days"),
    ("huge retention", RTC + "retention_days = 1000000000000\n", "retention_days"),
    ("retention as text", RTC + "retention_days = '7'\n", "retention_days"),
    ("retention as float", RTC + "retention_days = 7.5\n", "retention_days"),
    ("zero batch size", RTC + "batch_size = 0\n", "batch_size"),
    ("unparsable interval", RTC + "interval = 'sometimes'\n", "interval"),
    ("negative interval", RTC + "interval = '-5m'\n", "interval"),
    ("zero interval", RTC + "interval = '0s'\n", "interval"),
    ("bad cron", RTC + "cron = '61 * * * *'\n", "cron"),
    ("cron with six fields", RTC + "cron = '0 0 3 * * *'\n", "cron"),
    ("interval and cron", RTC + "interval = '1h'\ncron = '0 3 * * *'\n", "interval"),
    ("unknown time zone", RTC + "cron = '0 3 * * *'\ntimezone = 'Mars/Olympus'\n", "timezone"),
    ("time zone without cron", RTC + "timezone = 'Europe/Berlin'\n", "timezone"),
    ("enabled not boolean", RTC + "enabled = 'yes'\n", "enabled"),
    ("bad retry delay", RTC + "retry_delays = ['60s', 'soon']\n", "retry_delays"),
    ("retry delays not a list", RTC + "retry_delays = '60s'\n", "retry_delays"),
    ("negative timeout", RTC + "timeout = '-1m'\n", "timeout"),
    ("table name injection", RTC + "table = 'tokens; drop table users'\n", "table"),
    ("control character", RTC + "table = \"tok\\u0007ens\"\n", "table"),
    ("unknown lock backend", "[locks]\nbackend = 'redis'\n", "backend"),
    ("zero lease ttl", "[locks]\nlease_ttl = '0s'\n", "lease_ttl"),
    ("host loss bound too short", "[locks]\nhost_loss_bound = '1s'\n", "host_loss_bound"),
    ("host loss bound too long", "[locks]\nhost_loss_bound = '2h'\n", "host_loss_bound"),
    ("host loss bound not a duration", "[locks]\nhost_loss_bound = 'soon'\n", "host_loss_bound"),
    ("zero retry attempts", "[retry]\nattempts = 0\n", "attempts"),
    ("short history retention", "[history]\nretention = '1m'\n", "retention"),
    ("unknown top-level key", "databse_url = 'sqlite:///x.db'\n", "databse_url"),
    ("jobs not a table", "jobs = 3\n", "jobs"),
    ("invalid TOML", "[jobs.refresh-token-cleanup\nretention_days = 3\n", "TOML"),
    ("ping url not http", RTC + "ping_url = 'ftp://hc.example/abc'\n", "ping_url"),
]


def _fingerprint(ws, engine) -> tuple:
    with engine.connect() as conn:
        counts = (conn.execute(select(func.count()).select_from(executions)).scalar(),
                  conn.execute(select(func.count()).select_from(runs)).scalar())
    db_file = Path(ws.db_url.removeprefix("sqlite:///")) if ws.db_url.startswith("sqlite") else None
    digest = hashlib.sha256(db_file.read_bytes()).hexdigest() if db_file else None
    return counts, digest


@pytest.mark.backend_neutral
@pytest.mark.parametrize("case,toml,key", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_exits_78_with_one_line_naming_the_key(workspace, engine, cli, case, toml, key):
    workspace.write_config(toml)
    before = _fingerprint(workspace, engine)
    result = cli(workspace, "refresh-token-cleanup")
    assert result.exit_code == 78, (case, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert key in lines[0], lines[0]
    assert _fingerprint(workspace, engine) == before


@pytest.mark.parametrize("url,fragment", [
    ("notaurl", "database_url"),
    ("foo://host/db", "unsupported database"),
    ("postgresql+nodriver://u@h/db", "driver"),
])
def test_bad_database_url_exits_78(sqlite_workspace, cli, url, fragment):
    result = cli(sqlite_workspace, "refresh-token-cleanup", env={"CRONWARDEN_DATABASE_URL": url})
    assert result.exit_code == 78
    assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_missing_config_file_is_a_configuration_error(sqlite_workspace, cli):
    result = cli(sqlite_workspace, "--config", "/nonexistent/cronwarden.toml", "list")
    assert result.exit_code == 78 and "config file not found" in result.stderr


def test_unreadable_database_url_file_is_a_configuration_error(sqlite_workspace, cli, tmp_path):
    result = cli(sqlite_workspace, "list", env={"CRONWARDEN_DATABASE_URL": "",
                                                "CRONWARDEN_DATABASE_URL_FILE": str(tmp_path / "missing")})
    assert result.exit_code == 78 and "CRONWARDEN_DATABASE_URL_FILE" in result.stderr


def test_database_url_from_a_file_is_used(sqlite_workspace, cli, tmp_path):
    secret_file = tmp_path / "db-url"
    secret_file.write_text(sqlite_workspace.db_url + "\n")
    result = cli(sqlite_workspace, "status", "--json",
                 env={"CRONWARDEN_DATABASE_URL": "", "CRONWARDEN_DATABASE_URL_FILE": str(secret_file)})
    assert result.exit_code == 0 and sqlite_workspace.db_url in result.stdout


def test_bad_command_line_option_value_is_a_usage_error(sqlite_workspace, cli):
    result = cli(sqlite_workspace, "refresh-token-cleanup", "--retention-days", "0")
    assert result.exit_code == 2 and "--retention-days" in result.stderr


def test_valid_config_is_applied(sqlite_workspace, cli):
    sqlite_workspace.write_config(RTC + "cron = '30 4 * * *'\nretention_days = 3\ngrace = '2h'\n")
    result = cli(sqlite_workspace, "list")
    assert result.exit_code == 0 and "cron 30 4 * * *" in result.stdout
